"""X3D backbone (Feichtenhofer, "X3D: Expanding Architectures for Efficient
Video Recognition", CVPR 2020), exactly as PySlowFast builds it.

Data flow (shapes for X3D-M, 16x224x224 input)::

    input  N x 3   x 16 x 224 x 224
    stem   1x3x3 conv /2 -> 5x1x1 channelwise conv -> BN -> ReLU
           N x 24  x 16 x 112 x 112
    layer1 3  blocks, first with spatial stride 2    -> N x 24  x 16 x 56 x 56
    layer2 5  blocks, first with spatial stride 2    -> N x 48  x 16 x 28 x 28
    layer3 11 blocks, first with spatial stride 2    -> N x 96  x 16 x 14 x 14
    layer4 7  blocks, first with spatial stride 2    -> N x 192 x 16 x 7  x 7

    block: 1x1x1 conv -> BN -> ReLU
           -> 3x3x3 channelwise conv -> BN -> [SE] -> swish
           -> 1x1x1 conv -> BN   (+ shortcut, a 1x1x1 conv + BN if the shape
           changes) -> ReLU

The conv_5 layer that PySlowFast puts in its head belongs to
:class:`~x3d_plugin.models.heads.X3DHead` here, so the backbone's outputs are
the stage features that detection or localisation necks consume.
"""
import functools
from contextlib import contextmanager, nullcontext
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from x3d_plugin.ops import ChannelwiseConv3d
from x3d_plugin.ops.batch_norm import (batch_norm_act, has_hooks,
                                       squeeze_excite_fusable,
                                       squeeze_excite_silu)
from x3d_plugin.registry import MODELS
from ..checkpoint import load_checkpoint_strict
from ..precision import cpu_bf16_as_fp32
from ..variants import (BASE_STAGE_BLOCKS, resolve_factors, round_width,
                        x3d_structure)

# The 1/16 squeeze-excitation ratio of the paper (Sec. 4) and X3D.SE_RATIO.
SE_RATIO = 1 / 16


def swish(x: Tensor) -> Tensor:
    """Swish, ``x * sigmoid(x)``.

    ``F.silu`` keeps only its input for the backward pass (its gradient is
    recomputed from ``x``), which is the memory-saving form that PySlowFast
    writes by hand as ``SwishEfficient``; it is also a single fused kernel.
    """
    return F.silu(x)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation on the channelwise conv's output.

    Args:
        channels (int): Channels of the input.
        ratio (float): Hidden width as a fraction of ``channels``; the hidden
            width is rounded to a multiple of 8 (at least 8).
        window (int, optional): None pools over the whole clip (X3D). An
            integer ``k`` scales each frame from the mean over the ``k``
            frames up to and including it (fewer at the start of the
            clip), which is what continual inference computes
            (:mod:`x3d_plugin.models.continual`). Defaults to None.
    """

    def __init__(self,
                 channels: int,
                 ratio: float = SE_RATIO,
                 window: Optional[int] = None) -> None:
        super().__init__()
        self.window = window
        hidden = round_width(channels, ratio)
        self.fc1 = nn.Conv3d(channels, hidden, kernel_size=1, bias=True)
        self.fc2 = nn.Conv3d(hidden, channels, kernel_size=1, bias=True)

    def excite(self, pooled: Tensor) -> Tensor:
        """The factors for the pooled input (``N x C x 1 x 1 x 1``, or
        ``N x C x T x 1 x 1`` with a window)."""
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))

    def forward(self, x: Tensor) -> Tensor:
        if self.window is None:
            pooled = x.mean(dim=(2, 3, 4), keepdim=True)
        else:
            pooled = causal_window_mean(x.mean(dim=(3, 4)), self.window)
            pooled = pooled[..., None, None]
        return x * self.excite(pooled)

    def _excite_linear(self, pooled: Tensor) -> Tensor:
        """:meth:`excite` of ``N x C x 1 x 1 x 1`` as matrix products (the
        same weights; 1x1x1 convolutions of one voxel cost several times
        as much per call on CPU)."""
        n, c = pooled.shape[:2]
        hidden = F.relu(
            F.linear(pooled.reshape(n, c), self.fc1.weight.flatten(1),
                     self.fc1.bias))
        scale = F.linear(hidden, self.fc2.weight.flatten(1), self.fc2.bias)
        return torch.sigmoid(scale).view(n, c, 1, 1, 1)

    def forward_silu(self, x: Tensor) -> Tensor:
        """``swish(self(x))``, fused where
        :func:`~x3d_plugin.ops.batch_norm.squeeze_excite_silu` can."""
        if (self.window is not None or has_hooks(self)
                or not squeeze_excite_fusable(x)):
            return swish(self(x))
        plain = has_hooks(self.fc1) or has_hooks(self.fc2)
        return squeeze_excite_silu(
            x, self.excite if plain else self._excite_linear)


def causal_window_mean(x: Tensor, window: int) -> Tensor:
    """Mean over the last ``window`` steps of ``x`` (``N x C x T``) up to
    and including each step; the first ``window - 1`` steps average the
    steps there are."""
    steps = x.shape[-1]
    sums = F.avg_pool1d(
        F.pad(x, (window - 1, 0)), window, stride=1) * window
    counts = torch.arange(1, steps + 1, device=x.device).clamp(max=window)
    return sums / counts.to(x.dtype)


class X3DBlock(nn.Module):
    """X3D bottleneck block with a channelwise 3x3x3 convolution.

    Args:
        in_channels (int): Input channels.
        inner_channels (int): Width of the channelwise conv (bottleneck).
        out_channels (int): Output channels.
        spatial_stride (int): Spatial stride of the channelwise conv and of
            the shortcut.
        spatial_dilation (int): Spatial dilation of the channelwise conv
            (its padding grows with it, so the size only follows the
            stride).
        use_se (bool): Whether the block has squeeze-excitation.
        norm_cfg (dict): Normalisation layer config.
        with_cp (bool): Recompute the block in backward instead of keeping
            its activations.
        temporal_padding (bool): Zero-pad the channelwise conv in time
            (X3D). Without it the block gives 2 frames fewer than it gets,
            and the shortcut keeps the frames at the kernel's centres.
        se_window (int, optional): Temporal window of the SE pooling (see
            :class:`SqueezeExcitation`).
    """

    def __init__(self,
                 in_channels: int,
                 inner_channels: int,
                 out_channels: int,
                 spatial_stride: int = 1,
                 spatial_dilation: int = 1,
                 use_se: bool = False,
                 norm_cfg: Optional[Dict] = None,
                 with_cp: bool = False,
                 temporal_padding: bool = True,
                 se_window: Optional[int] = None) -> None:
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN3d')
        self.with_cp = with_cp
        # Frames the unpadded channelwise conv loses at each end.
        self.temporal_crop = 0 if temporal_padding else 1
        self.conv1 = nn.Conv3d(
            in_channels, inner_channels, kernel_size=1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, inner_channels)[1]
        self.conv2 = ChannelwiseConv3d(
            inner_channels,
            kernel_size=3,
            stride=(1, spatial_stride, spatial_stride),
            padding=(1 - self.temporal_crop, spatial_dilation,
                     spatial_dilation),
            dilation=(1, spatial_dilation, spatial_dilation))
        self.bn2 = build_norm_layer(norm_cfg, inner_channels)[1]
        self.se = SqueezeExcitation(
            inner_channels, window=se_window) if use_se else None
        self.conv3 = nn.Conv3d(
            inner_channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = build_norm_layer(norm_cfg, out_channels)[1]
        if spatial_stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(
                    in_channels,
                    out_channels,
                    kernel_size=1,
                    stride=(1, spatial_stride, spatial_stride),
                    bias=False),
                build_norm_layer(norm_cfg, out_channels)[1])
        else:
            self.downsample = None

    def conv_bn_pairs(self):
        """(conv, BN) pairs that :func:`~x3d_plugin.models.fuse_conv_bn`
        can fold."""
        pairs = [('conv1', 'bn1'), ('conv2', 'bn2'), ('conv3', 'bn3')]
        if self.downsample is not None:
            pairs.append(('downsample.0', 'downsample.1'))
        return pairs

    def _residual(self, x: Tensor) -> Tensor:
        # BN with the residual addition and ReLU or swish after it, and
        # SE with the swish, run fused where batch_norm_act and
        # squeeze_excite_silu can (CPU, channels-last), else as modules.
        out = batch_norm_act(self.conv1(x), self.bn1, act='relu')
        if self.se is not None:
            out = batch_norm_act(self.conv2(out), self.bn2)
            out = self.se.forward_silu(out)
        else:
            out = batch_norm_act(self.conv2(out), self.bn2, act='silu')
        out = self.conv3(out)
        if self.downsample is None:
            identity = x
        elif has_hooks(self.downsample):
            identity = self.downsample(x)
        else:
            identity = batch_norm_act(self.downsample[0](x),
                                      self.downsample[1])
        if self.temporal_crop:
            crop = self.temporal_crop
            identity = identity[:, :, crop:identity.shape[2] - crop]
        return batch_norm_act(out, self.bn3, act='relu', residual=identity)

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and self.training and torch.is_grad_enabled():
            if torch.compiler.is_compiling():
                # Compiled, the recomputation is part of the backward graph
                # and the BN statistics are updated once by the forward
                # graph; no context is needed (nor allowed).
                return checkpoint.checkpoint(
                    self._residual, x, use_reentrant=False)
            return checkpoint.checkpoint(
                self._residual,
                x,
                use_reentrant=False,
                context_fn=functools.partial(_checkpoint_contexts, self))
        return self._residual(x)

    @contextmanager
    def _frozen_norm_stats(self):
        """Keep BN running statistics unchanged while the block is recomputed
        for backward, so ``with_cp`` updates them once per step like the
        plain forward does."""
        saved = []
        for m in self.modules():
            if isinstance(m, _BatchNorm) and m.track_running_stats:
                saved.append((m, m.momentum, m.num_batches_tracked.clone()))
                m.momentum = 0.0
        try:
            yield
        finally:
            for m, momentum, num_batches in saved:
                m.momentum = momentum
                m.num_batches_tracked.copy_(num_batches)


def _checkpoint_contexts(block: X3DBlock):
    """(forward, recompute) contexts of a checkpointed block (a function,
    not a method, so that torch.compile can call it too)."""
    return nullcontext(), block._frozen_norm_stats()


class X3DStem(nn.Module):
    """X3D's stem: a spatial 1x3x3 convolution with stride 2, then a
    channelwise temporal 5x1x1 convolution, BN and ReLU (PySlowFast's
    ``X3DStem``; paper Table 1, ``conv1``).

    Args:
        in_channels (int): Channels of the input clip.
        out_channels (int): Width of the stem.
        norm_cfg (dict): Normalisation layer config.
        temporal_padding (bool): Zero-pad the temporal conv (X3D); without
            it the stem gives 4 frames fewer than it gets. Defaults to
            True.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 norm_cfg: Dict,
                 temporal_padding: bool = True) -> None:
        super().__init__()
        self.conv_xy = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=(1, 3, 3),
            stride=(1, 2, 2),
            padding=(0, 1, 1),
            bias=False)
        self.conv_t = ChannelwiseConv3d(
            out_channels,
            kernel_size=(5, 1, 1),
            padding=(2 if temporal_padding else 0, 0, 0))
        self.bn = build_norm_layer(norm_cfg, out_channels)[1]

    def conv_bn_pairs(self):
        """(conv, BN) pairs that :func:`~x3d_plugin.models.fuse_conv_bn`
        can fold."""
        return [('conv_t', 'bn')]

    def forward(self, x: Tensor) -> Tensor:
        if _cpu_autocast_training(x, self.conv_xy.weight):
            # oneDNN's reduced-precision weight gradient of a convolution
            # with 3 input channels hangs or crashes (SIGSEGV) on CPUs with
            # AMX in torch 2.13 (seen at 4x3x4x160x160 and 2x3x4x224x224,
            # NCDHW and channels-last alike; tests/models/test_precision.py).
            # This convolution is the cheapest of the network: it runs in
            # float32, and the channelwise convolution after it casts to
            # the autocast dtype as before.
            with torch.autocast('cpu', enabled=False):
                y = self.conv_xy(x.float())
        else:
            y = self.conv_xy(x)
        return batch_norm_act(self.conv_t(y), self.bn, act='relu')


def _cpu_autocast_training(x: Tensor, weight: Tensor) -> bool:
    """A CPU forward under autocast whose weight gradient will be
    computed."""
    return (x.device.type == 'cpu' and torch.is_autocast_enabled('cpu')
            and torch.is_grad_enabled() and weight.requires_grad)


@MODELS.register_module()
class X3D(BaseModule):
    """X3D backbone.

    The variants share one generator and differ in three expansion factors,
    read from :data:`x3d_plugin.models.variants.VARIANTS` (PySlowFast
    ``configs/Kinetics/X3D_*.yaml``; paper Table 3). XS, S and M are one
    network that is fed different clips (4x160², 13x160², 16x224²); clip
    length and crop size belong to the data pipeline, not here.

    ====  =====  =====  ==========  ===============  ===============  ==========
    arch  width  depth  bottleneck  stage widths     inner widths     blocks
    ====  =====  =====  ==========  ===============  ===============  ==========
    xs    2.0    2.2    2.25        24/48/96/192     54/108/216/432   3/5/11/7
    s     2.0    2.2    2.25        24/48/96/192     54/108/216/432   3/5/11/7
    m     2.0    2.2    2.25        24/48/96/192     54/108/216/432   3/5/11/7
    l     2.0    5.0    2.25        24/48/96/192     54/108/216/432   5/10/25/15
    xl    2.9    5.0    2.25        32/72/136/280    72/162/306/630   5/10/25/15
    ====  =====  =====  ==========  ===============  ===============  ==========

    XL has no PySlowFast config; its factors are the paper's.

    Args:
        arch (str | dict): ``'xs'``, ``'s'``, ``'m'``, ``'l'``, ``'xl'``, or a
            dict with the keys ``width_factor``, ``depth_factor`` and
            ``bottleneck_factor`` (all > 0). Defaults to ``'m'``.
        in_channels (int): Channels of the input clip. Defaults to 3.
        spatial_strides (Sequence[int]): Spatial stride of each stage's
            first block. Detection keeps the last stage at stride 1
            (``(2, 2, 2, 1)``: a 16x instead of 32x smaller map, as the
            SlowFast detector does with res5); the weights do not change
            with it. Defaults to ``(2, 2, 2, 2)``.
        spatial_dilations (Sequence[int]): Spatial dilation of the
            channelwise convolutions of each stage (the SlowFast detector
            dilates res5 by 2 when it drops its stride). Defaults to
            ``(1, 1, 1, 1)``.
        out_indices (Sequence[int]): Stages (0-3) whose outputs are returned;
            one index gives a tensor, several give a tuple. Defaults to
            ``(3,)``.
        frozen_stages (int): ``-1`` freezes nothing, ``0`` the stem, ``k`` the
            stem and stages 1..k (parameters fixed, BN in eval mode).
            Defaults to -1.
        norm_cfg (dict): Normalisation layers, e.g. ``dict(type='BN3d')`` or
            ``dict(type='SyncBN')``. Defaults to ``dict(type='BN3d')``.
        norm_eval (bool): Keep every BN layer in eval mode while training
            (frozen running statistics). Defaults to False.
        with_cp (bool): Activation checkpointing per block: saves memory,
            costs a second forward; outputs, gradients and BN statistics are
            the same as without. Defaults to False.
        channels_last (bool): Run in the channels-last-3d memory format
            (the input is converted once; every layer keeps the format;
            the convolution weights are stored in it too, which
            ``torch.compile`` needs to pick the fast kernels).
            The channelwise convolutions (``ChannelwiseConv3d``) run on
            :mod:`x3d_plugin.ops`' kernels, which work in this format (their
            output is channels-last in any case): C++ on CPU, Triton on
            CUDA (cuDNN's channelwise kernels, the fallback without
            Triton, are several times slower in this format than in
            NCDHW; docs/benchmarks.md). The numbers are the same either
            way. Defaults to True.
        zero_init_residual (bool): Initialise the last BN of each block to
            zero, as PySlowFast does (``RESNET.ZERO_INIT_FINAL_BN``).
            Defaults to True.
        temporal_padding (bool): Zero-pad the temporal convolutions (the
            stem's 5x1x1 and every 3x3x3), so that T frames in give T frames
            out (X3D). False makes them "valid" in time, as continual
            inference (CoX3D) computes them: T frames in give
            ``T - 4 - 2 * blocks`` out (T - 56 for XS/S/M), each block's
            shortcut keeping the frames at its kernel's centres. The weights
            are the same either way. Defaults to True.
        se_window (int, optional): None: the SE blocks pool over the whole
            clip (X3D). ``k``: each frame is scaled from the mean over the
            ``k`` frames up to it, as continual inference computes it.
            Defaults to None.
        init_cfg (dict | list[dict], optional): MMEngine initialisation
            config, e.g. ``dict(type='Pretrained', checkpoint='x.pth',
            prefix='backbone.')``. A pretrained file must fit the network
            exactly. Defaults to None (PySlowFast's initialisation).
    """

    def __init__(self,
                 arch: Union[str, Dict] = 'm',
                 in_channels: int = 3,
                 spatial_strides: Sequence[int] = (2, 2, 2, 2),
                 spatial_dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (3, ),
                 frozen_stages: int = -1,
                 norm_cfg: Dict = dict(type='BN3d', requires_grad=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 channels_last: bool = True,
                 zero_init_residual: bool = True,
                 temporal_padding: bool = True,
                 se_window: Optional[int] = None,
                 init_cfg: Optional[Union[Dict, Sequence[Dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        factors = resolve_factors(arch)
        num_stages = len(BASE_STAGE_BLOCKS)
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i < num_stages
                                  for i in out_indices):
            raise ValueError(f'out_indices must be a non-empty subset of '
                             f'0..{num_stages - 1}, got {out_indices}')
        spatial_strides = tuple(spatial_strides)
        spatial_dilations = tuple(spatial_dilations)
        for name, values in (('spatial_strides', spatial_strides),
                             ('spatial_dilations', spatial_dilations)):
            if len(values) != num_stages or any(
                    not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(
                    f'{name} must be {num_stages} integers >= 1 (one per '
                    f'stage), got {values}')
        if se_window is not None and (not isinstance(se_window, int)
                                      or se_window < 1):
            raise ValueError(f'se_window must be None (the whole clip) or '
                             f'an integer >= 1, got {se_window!r}')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in -1..{num_stages}, '
                             f'got {frozen_stages}')
        self.arch = arch
        self.width_factor = factors['width_factor']
        self.depth_factor = factors['depth_factor']
        self.bottleneck_factor = factors['bottleneck_factor']
        self.spatial_strides = spatial_strides
        self.spatial_dilations = spatial_dilations
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.channels_last = channels_last
        self.zero_init_residual = zero_init_residual
        self.temporal_padding = temporal_padding
        self.se_window = se_window
        self.structure = x3d_structure(factors)
        self.stage_widths = self.structure.stage_widths
        self.inner_widths = self.structure.inner_widths
        self.stage_blocks = self.structure.stage_blocks

        self.stem = X3DStem(in_channels, self.structure.stem_width, norm_cfg,
                            temporal_padding)
        self.layer_names = []
        width_in = self.structure.stem_width
        for i in range(num_stages):
            name = f'layer{i + 1}'
            self.add_module(name, self._make_stage(i, width_in, norm_cfg))
            self.layer_names.append(name)
            width_in = self.stage_widths[i]
        self.out_channels = self.stage_widths[out_indices[-1]]
        if channels_last:
            self.to(memory_format=torch.channels_last_3d)
        self._freeze_stages()

    def _make_stage(self, index: int, in_channels: int,
                    norm_cfg: Dict) -> nn.Sequential:
        """Stage ``index`` (0-3): its blocks, the first with the stage's
        spatial stride (2 unless changed) and SE on every other block
        starting with the first."""
        width = self.stage_widths[index]
        return nn.Sequential(*[
            X3DBlock(
                in_channels if j == 0 else width,
                self.inner_widths[index],
                width,
                spatial_stride=self.spatial_strides[index] if j == 0 else 1,
                spatial_dilation=self.spatial_dilations[index],
                use_se=j % 2 == 0,
                norm_cfg=norm_cfg,
                with_cp=self.with_cp,
                temporal_padding=self.temporal_padding,
                se_window=self.se_window)
            for j in range(self.stage_blocks[index])
        ])

    @staticmethod
    def resolve_arch(arch: Union[str, Dict]) -> Dict[str, float]:
        """Expansion factors of ``arch`` (a variant name or a factor dict);
        see :func:`x3d_plugin.models.variants.resolve_factors`."""
        return resolve_factors(arch)

    def init_weights(self) -> None:
        """PySlowFast's initialisation, or the pretrained file of
        ``init_cfg`` (loaded strictly)."""
        init_cfg = self.init_cfg
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            load_checkpoint_strict(self, init_cfg['checkpoint'],
                                   init_cfg.get('prefix', ''))
            self._is_init = True
            return
        if init_cfg is not None:
            super().init_weights()
            return
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                # c2_msra_fill in PySlowFast's init_helper.
                nn.init.kaiming_normal_(
                    m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _BatchNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, X3DBlock):
                    nn.init.zeros_(m.bn3.weight)

    def _freeze_stages(self) -> None:
        frozen = ([self.stem] if self.frozen_stages >= 0 else []) + [
            getattr(self, name)
            for name in self.layer_names[:max(self.frozen_stages, 0)]
        ]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, ...]]:
        """Stage features of a clip batch ``N x C x T x H x W``.

        Under CPU bf16 autocast on a CPU without bf16 instructions it runs
        in float32 (:mod:`x3d_plugin.models.precision`)."""
        with cpu_bf16_as_fp32(x) as x:
            return self._forward(x)

    def _forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, ...]]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self.stem(x)
        outs = []
        for i, name in enumerate(self.layer_names[:max(self.out_indices) + 1]):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def train(self, mode: bool = True) -> 'X3D':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
