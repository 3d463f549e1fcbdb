"""What the benchmarks in ``tools/benchmark/`` share: the model and the data
pipeline of MMAction2's stock X3D beside ours, one module to time them as
one network, and the machine description their tables are headed with."""
import copy
import time

import torch
from torch import nn

from x3d_plugin.models import VARIANTS, build_x3d_recognizer, fuse_conv_bn
from x3d_plugin.models.converters import convert_state_dict
from x3d_plugin.models.converters.mmaction2 import (mmaction2_can_build,
                                                    mmaction2_recognizer_cfg)
from x3d_plugin.ops import fast_channelwise_enabled, set_fast_channelwise
from x3d_plugin.ops.batch_norm import (fast_batch_norm_enabled,
                                       set_fast_batch_norm)
from x3d_plugin.utils.benchmark import describe_machine  # noqa: F401


def stock_archs():
    """The variants that MMAction2's own X3D can build."""
    return tuple(n for n in VARIANTS if mmaction2_can_build(n))


class Net(nn.Module):
    """A recognizer's backbone and head as one module (``x`` -> logits).

    With ``aten_channelwise`` the channelwise convolutions run on PyTorch's
    own kernels instead of :mod:`x3d_plugin.ops`, with ``aten_norm`` the
    BN layers, activations and SE on PyTorch's modules instead of
    :mod:`x3d_plugin.ops.batch_norm`'s fused kernels (the switches are read
    when the forward runs, which also decides the backward).
    """

    def __init__(self, backbone, head, channels_last_input=False,
                 aten_channelwise=False, aten_norm=False):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.channels_last_input = channels_last_input
        self.aten_channelwise = aten_channelwise
        self.aten_norm = aten_norm

    def forward(self, x):
        if self.channels_last_input:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        channelwise = fast_channelwise_enabled()
        norm = fast_batch_norm_enabled()
        set_fast_channelwise(channelwise and not self.aten_channelwise)
        set_fast_batch_norm(norm and not self.aten_norm)
        try:
            return self.head(self.backbone(x))
        finally:
            set_fast_channelwise(channelwise)
            set_fast_batch_norm(norm)


def build_pair(arch, num_classes=400):
    """MMAction2's X3D recognizer and ours with the same (random) weights."""
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    register_all_modules()
    theirs = MODELS.build(mmaction2_recognizer_cfg(arch, num_classes))
    theirs.init_weights()
    ours = build_x3d_recognizer(arch, num_classes)
    converted = convert_state_dict(
        copy.deepcopy(theirs.state_dict()), 'mmaction2')
    ours.load_state_dict(converted['state_dict'], strict=True)
    return theirs, ours


def stock_train_pipeline(cfg):
    """MMAction2's stock training pipeline (DecordInit, SampleFrames,
    DecordDecode, RandomRescale, RandomCrop, Flip, FormatShape,
    PackActionInputs) with the recipe of the X3D config ``cfg``
    (``num_frames``, ``sampling_rate``, ``train_jitter``, ``train_crop``)."""
    return [
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=cfg.num_frames,
             frame_interval=cfg.sampling_rate, num_clips=1),
        dict(type='DecordDecode'),
        dict(type='RandomRescale', scale_range=tuple(cfg.train_jitter)),
        dict(type='RandomCrop', size=cfg.train_crop),
        dict(type='Flip', flip_ratio=0.5),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs'),
    ]


def sync(device):
    """Wait for the device's queued work (CUDA) before reading a clock."""
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


BASELINE = 'mmaction2 default'
INFERENCE_ONLY = ('ours + BN folded', )


def model_variants(theirs, ours, device, compile=False):
    """name -> model (backbone + head as :class:`Net`) for every
    configuration the model benchmark compares: MMAction2's X3D at its
    defaults and channels-last; ours at its defaults, with PyTorch's
    channelwise convolution instead of :mod:`x3d_plugin.ops`, with
    PyTorch's BN, activations and SE instead of the fused kernels (these
    two share the modules of ours at its defaults), contiguous,
    with ``with_cp``, with BN folded; with ``compile`` also both
    compiled."""
    out = {}
    m = copy.deepcopy(theirs)
    out[BASELINE] = Net(m.backbone, m.cls_head).to(device)
    m = copy.deepcopy(theirs)
    net = Net(m.backbone, m.cls_head, channels_last_input=True).to(device)
    out['mmaction2 + channels-last'] = net.to(
        memory_format=torch.channels_last_3d)
    m = copy.deepcopy(ours)
    base = Net(m.backbone, m.cls_head).to(device)
    out['ours default (channels-last)'] = base
    # The switch-only configurations share base's modules: they compare
    # kernels on the same weights and BN statistics, which the timed train
    # steps change (after eight bf16 steps the same forward took up to 4%
    # longer than on the initial weights, X3D-XS on a 2-core CPU).
    out['ours, aten channelwise conv'] = Net(base.backbone, base.head,
                                             aten_channelwise=True)
    out['ours, aten BN'] = Net(base.backbone, base.head, aten_norm=True)
    m = copy.deepcopy(ours)
    m.backbone.channels_last = False
    m.backbone.to(memory_format=torch.contiguous_format)
    out['ours contiguous'] = Net(m.backbone, m.cls_head).to(device)
    m = copy.deepcopy(ours)
    m.backbone.with_cp = True
    for module in m.backbone.modules():
        if hasattr(module, 'with_cp'):
            module.with_cp = True
    out['ours + with_cp'] = Net(m.backbone, m.cls_head).to(device)
    m = copy.deepcopy(ours)
    out['ours + BN folded'] = fuse_conv_bn(
        Net(m.backbone, m.cls_head).to(device).eval())
    if compile:
        out['mmaction2 + channels-last + compile'] = torch.compile(
            copy.deepcopy(out['mmaction2 + channels-last']))
        out['ours + compile'] = torch.compile(
            copy.deepcopy(out['ours default (channels-last)']))
    return out


def time_train_step(model, x, y, optimizer, precision, device):
    """Seconds of one training step (forward under autocast to
    ``precision``, cross-entropy, backward, optimizer step)."""
    model.train()
    sync(device)
    start = time.perf_counter()
    with torch.autocast(device.split(':')[0], dtype=precision,
                        enabled=precision != torch.float32):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start
