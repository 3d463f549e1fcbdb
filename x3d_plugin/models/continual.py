"""Continual X3D: one prediction per new frame, each frame computed once.

After CoX3D (Hedegaard & Iosifidis, "Continual 3D Convolutional Neural
Networks for Real-time Processing of Videos", ECCV 2022). A clip-mode X3D
recomputes every frame of its clip at every prediction; the continual form
of the same weights takes one frame at a time and keeps, for every layer
that looks along time, what it needs of the past:

* each temporal convolution (the stem's 5x1x1, the channelwise 3x3x3 of
  every block) keeps its last ``k - 1`` input frames and computes the one
  new output frame from them and the new frame;
* each block's shortcut is delayed by one frame, so that it adds the frame
  at the centre of the 3x3x3 kernel, as the unpadded clip-mode block does;
* each SE block and the head average over a window of their last frames
  (``se_window``, ``pool_window``) instead of over the clip.

X3D has no temporal stride, so every layer gives one frame per input frame.
Temporal zero padding has no continual form (it would need frames that have
not arrived), so the continual network is the clip network without it: the
clip-mode reference of the same weights is
``X3D(..., temporal_padding=False, se_window=se_window)`` followed by the
head over the last ``pool_window`` frames (:func:`clip_reference`). The
states start as zeros (as if the stream were preceded by black features);
from :attr:`ContinualX3D.warmup_frames` on, no output depends on them and
every output equals the clip-mode reference on the same frames.

Example::

    net = ContinualX3D(recognizer.backbone, recognizer.cls_head,
                       se_window=16, pool_window=16).eval()
    for frame in frames:                  # N x 3 x H x W, normalised
        logits = net.step(frame)          # N x num_classes
"""
import copy
from collections import deque
from typing import Deque, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones.x3d import X3D, X3DBlock, swish
from .heads.x3d_head import X3DHead


class _FrameConv3d(nn.Conv3d):
    """An ``nn.Conv3d`` with a kernel one frame long and no temporal
    padding, run on one frame as the 2D convolution it is there: PyTorch's
    CPU ``conv3d`` takes its slow reference path on a one-frame input, and
    ``conv2d`` does too with a weight sliced from a channels-last-3d one
    (hence the small copy)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] != 1:
            return super().forward(x)
        weight = self.weight[:, :, 0].contiguous(
            memory_format=torch.channels_last)
        return F.conv2d(x[:, :, 0], weight, self.bias,
                        self.stride[1:], self.padding[1:],
                        self.dilation[1:], self.groups).unsqueeze(2)


class ContinualX3D(nn.Module):
    """The continual (frame-by-frame) form of an X3D backbone and head.

    The backbone and head are copied (the continual network does not follow
    later changes to them), their temporal convolutions unpadded; BN folded
    by :func:`~x3d_plugin.models.fuse_conv_bn` stays folded. Inference only:
    BN runs with its running statistics whatever the mode.

    Args:
        backbone (X3D): A clip-mode backbone with the default
            ``temporal_padding=True`` or without it; its weights are used.
        head (X3DHead): Its head.
        se_window (int): Frames the SE blocks average over. CoX3D uses the
            clip length the model was trained with; 1 pools each frame
            alone.
        pool_window (int): Frames the head averages over (the clip length
            the model was trained with gives the training clip's span).

    Raises:
        TypeError: for a backbone or head of another kind.
        ValueError: for a window below 1 or a backbone that strides or
            pools in time.
    """

    def __init__(self, backbone: X3D, head: X3DHead, se_window: int,
                 pool_window: int) -> None:
        super().__init__()
        if not isinstance(backbone, X3D):
            raise TypeError('ContinualX3D needs an x3d_plugin X3D backbone, '
                            f'got {type(backbone).__name__}')
        if not isinstance(head, X3DHead):
            raise TypeError('ContinualX3D needs an x3d_plugin X3DHead, got '
                            f'{type(head).__name__}')
        for name, value in (('se_window', se_window),
                            ('pool_window', pool_window)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got '
                                 f'{value!r}')
        if backbone.out_indices != (len(backbone.layer_names) - 1, ):
            raise ValueError('ContinualX3D needs the backbone to end at its '
                             f'last stage, got out_indices='
                             f'{backbone.out_indices}')
        self.backbone = copy.deepcopy(backbone)
        self.head = copy.deepcopy(head)
        self.se_window = se_window
        self.pool_window = pool_window
        self.blocks: List[X3DBlock] = [
            block for name in self.backbone.layer_names
            for block in getattr(self.backbone, name)
        ]
        for conv in [self.backbone.stem.conv_t] + [
                b.conv2 for b in self.blocks]:
            if conv.stride[0] != 1 or conv.dilation[0] != 1:
                raise ValueError('continual inference needs temporal stride '
                                 'and dilation 1 (X3D has them), got '
                                 f'{conv.stride} / {conv.dilation}')
            conv.padding = (0, ) + tuple(conv.padding[1:])
        for module in list(self.backbone.modules()) + list(
                self.head.modules()):
            if (type(module) is nn.Conv3d and module.kernel_size[0] == 1
                    and module.padding[0] == 0
                    and module.padding_mode == 'zeros'):
                module.__class__ = _FrameConv3d
        self.reset()

    @property
    def warmup_frames(self) -> int:
        """Frames after which no output depends on the zero initial state:
        the output of step ``warmup_frames`` (counting from 0) and every
        later one equal the clip-mode reference. The temporal receptive
        field of the convolutions (57 frames for XS/S/M, 115 for L/XL)
        minus one, plus ``window - 1`` for every SE block and the head."""
        conv_t = self.backbone.stem.conv_t.kernel_size[0] - 1
        conv_t += sum(b.conv2.kernel_size[0] - 1 for b in self.blocks)
        num_se = sum(b.se is not None for b in self.blocks)
        return (conv_t + num_se * (self.se_window - 1) +
                self.pool_window - 1)

    def reset(self) -> None:
        """Forget the frames seen so far (start a new stream)."""
        self._conv_inputs: Dict[int, Tensor] = {}
        self._shortcuts: Dict[int, Tensor] = {}
        self._se_means: Dict[int, Deque[Tensor]] = {}
        self._head_means: Deque[Tensor] = deque(maxlen=self.pool_window)
        self.frames_seen = 0

    def _temporal_conv(self, key: int, conv: nn.Conv3d, x: Tensor) -> Tensor:
        """The new output frame of ``conv`` (unpadded in time) for the new
        input frame ``x`` (``N x C x 1 x H x W``)."""
        past = self._conv_inputs.get(key)
        if past is None:
            past = x.new_zeros(x.shape[:2] + (conv.kernel_size[0] - 1, ) +
                               x.shape[3:])
        window = torch.cat([past, x], dim=2)
        self._conv_inputs[key] = window[:, :, 1:]
        return conv(window)

    def _block_step(self, index: int, block: X3DBlock, x: Tensor) -> Tensor:
        out = F.relu(block.bn1(block.conv1(x)))
        out = block.bn2(self._temporal_conv(index, block.conv2, out))
        if block.se is not None:
            means = self._se_means.setdefault(
                index, deque(maxlen=self.se_window))
            means.append(out.mean(dim=(3, 4), keepdim=True))
            # The window is summed afresh each frame, not kept as a running
            # sum with the oldest frame subtracted: that would drift in
            # float32 over a long stream.
            scale = torch.stack(tuple(means)).sum(0) / len(means)
            scale = torch.sigmoid(
                block.se.fc2(F.relu(block.se.fc1(scale))))
            out = out * scale
        out = block.bn3(block.conv3(swish(out)))
        identity = x if block.downsample is None else block.downsample(x)
        # The conv's new output is centred one frame back: add the shortcut
        # of that frame.
        delayed = self._shortcuts.get(index)
        self._shortcuts[index] = identity
        if delayed is None:
            delayed = torch.zeros_like(identity)
        return F.relu(out + delayed)

    @torch.no_grad()
    def step(self, frame: Tensor) -> Tensor:
        """Class scores (logits) after one more frame.

        Args:
            frame (Tensor): ``N x C x H x W``, normalised as the model's
                clips are.

        Returns:
            Tensor: ``N x num_classes`` logits of the window ending at this
            frame.
        """
        if frame.dim() != 4:
            raise ValueError('step takes one frame N x C x H x W, got shape '
                             f'{tuple(frame.shape)}')
        x = frame.unsqueeze(2)
        if self.backbone.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        stem = self.backbone.stem
        x = F.relu(stem.bn(self._temporal_conv(-1, stem.conv_t,
                                               stem.conv_xy(x))))
        for index, block in enumerate(self.blocks):
            x = self._block_step(index, block, x)
        head = self.head
        x = head.relu(head.bn5(head.conv5(x)))
        self._head_means.append(x.mean(dim=(2, 3, 4)))
        pooled = torch.stack(tuple(self._head_means)).sum(0) / len(
            self._head_means)
        x = head.relu(head.fc1(pooled))
        self.frames_seen += 1
        return head.fc_cls(x)

    def forward(self, clip: Tensor) -> Tensor:
        """Step through the frames of ``clip`` (``N x C x T x H x W``),
        continuing from the frames seen before.

        Returns:
            Tensor: ``N x T x num_classes``, the logits after each frame.
        """
        return torch.stack(
            [self.step(clip[:, :, t]) for t in range(clip.shape[2])], dim=1)


def clip_reference(backbone: X3D, head: X3DHead, clip: Tensor,
                   pool_window: int) -> Tensor:
    """What :class:`ContinualX3D` computes, in clip mode: ``backbone`` must
    be built with ``temporal_padding=False`` and the continual network's
    ``se_window``; the head scores each window of ``pool_window`` backbone
    frames (fewer at the start).

    Args:
        backbone (X3D): The unpadded backbone.
        head (X3DHead): The head.
        clip (Tensor): ``N x C x T x H x W``.
        pool_window (int): Frames the head averages over.

    Returns:
        Tensor: ``N x T' x num_classes``, ``T' = T - 4 - 2 * blocks``; entry
        ``m`` belongs to continual step ``m + 4 + 2 * blocks``.
    """
    if backbone.temporal_padding:
        raise ValueError('the clip-mode reference of continual inference '
                         'needs a backbone built with temporal_padding=False')
    with torch.no_grad():
        feats = backbone(clip)
        return torch.stack([
            head(feats[:, :, max(0, m - pool_window + 1):m + 1])
            for m in range(feats.shape[2])
        ], dim=1)


def continual_flops(net: ContinualX3D, frame_shape) -> int:
    """Multiply-adds of one continual step (convolutions and linear layers,
    counted as :func:`~x3d_plugin.models.paper_flops` counts a clip).

    Args:
        net (ContinualX3D): The continual network.
        frame_shape (Sequence[int]): ``(N, C, H, W)`` of one frame.
    """
    from .complexity import paper_flops
    n, c, h, w = frame_shape
    return paper_flops(
        net, (n, c, 1, h, w),
        forward=lambda model, x: model.step(x[:, :, 0]))['total']


def continual_from_recognizer(model: nn.Module,
                              se_window: Optional[int] = None,
                              pool_window: Optional[int] = None
                              ) -> ContinualX3D:
    """The continual network of a recognizer (``model.backbone``,
    ``model.cls_head``), its windows defaulting to ``clip_len`` of the
    recognizer's config test pipeline (``model.cfg``, as
    :func:`x3d_plugin.apis.init_recognizer` sets it).

    Args:
        model (nn.Module): The recognizer.
        se_window (int, optional): See :class:`ContinualX3D`.
        pool_window (int, optional): See :class:`ContinualX3D`.
    """
    if se_window is None or pool_window is None:
        clip_len = _config_clip_len(model)
        se_window = se_window or clip_len
        pool_window = pool_window or clip_len
    return ContinualX3D(model.backbone, model.cls_head, se_window,
                        pool_window).eval()


def _config_clip_len(model: nn.Module) -> int:
    cfg = getattr(model, 'cfg', None)
    for step in (cfg.get('test_pipeline', []) if cfg is not None else []):
        if 'clip_len' in step:
            return int(step['clip_len'])
    raise ValueError('the windows of continual inference default to the '
                     'clip_len of the config\'s test pipeline, and the model '
                     'has no config with one: pass se_window and '
                     'pool_window')
