"""Continual (per-frame) X3D: exact to its clip-mode reference after
warm-up, state kept across calls, FLOPs per frame against a clip forward
(on the meta device), and the errors."""
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from x3d_plugin.models import (VARIANTS, X3D, ContinualX3D, X3DHead,
                               clip_reference, continual_flops,
                               continual_from_recognizer, paper_flops)


@pytest.fixture
def one_thread():
    # Each step works on one frame: tiny tensors, where two OpenMP threads
    # on a loaded 2-core machine wait on each other far longer than the op
    # takes. The numbers are the same with any thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_model(arch, num_classes=7, **backbone_kwargs):
    """Backbone and head in eval mode with random weights and random BN
    statistics and affine parameters, so that no layer is an identity (the
    default init zeroes each block's last BN, which would hide the residual
    branch from the comparison)."""
    backbone = X3D(arch=arch, **backbone_kwargs)
    backbone.init_weights()
    head = X3DHead(num_classes, backbone.stage_widths[-1],
                   backbone.inner_widths[-1])
    head.init_weights()
    torch.nn.init.normal_(head.fc1.weight, std=0.1)
    torch.nn.init.normal_(head.fc_cls.weight, std=0.3)
    for m in list(backbone.modules()) + list(head.modules()):
        if isinstance(m, _BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return backbone.eval(), head.eval()


def conv_frames(backbone):
    """Frames the unpadded backbone loses: 4 in the stem, 2 per block."""
    return 4 + 2 * sum(backbone.stage_blocks)


@pytest.mark.parametrize('arch,se_window,pool_window', [
    ('xs', 4, 4),  # XS's own clip length
    ('m', 16, 16),  # M's own clip length: the longest warm-up, 266 frames
    ('l', 1, 2),  # deeper; SE over each frame alone (CoX3D's frame scope)
])
def test_continual_equals_clip_reference_after_warmup(
        one_thread, arch, se_window, pool_window):
    backbone, head = random_model(arch)
    net = ContinualX3D(backbone, head, se_window, pool_window)
    blocks = sum(backbone.stage_blocks)
    num_se = sum((n + 1) // 2 for n in backbone.stage_blocks)
    assert net.warmup_frames == (4 + 2 * blocks + num_se * (se_window - 1) +
                                 pool_window - 1)
    frames = net.warmup_frames + 5
    clip = torch.randn(1, 3, frames, 32, 32)
    steps = net(clip)
    assert steps.shape == (1, frames, 7)

    unpadded = X3D(arch=arch, temporal_padding=False, se_window=se_window)
    unpadded.load_state_dict(backbone.state_dict(), strict=True)
    reference = clip_reference(unpadded.eval(), head, clip, pool_window)
    offset = conv_frames(backbone)
    assert reference.shape == (1, frames - offset, 7)
    exact = steps[:, net.warmup_frames:]
    expected = reference[:, net.warmup_frames - offset:]
    assert exact.shape[1] == 5
    assert expected.abs().max() > 0.5  # logits of a real size
    torch.testing.assert_close(exact, expected, atol=1e-4, rtol=0)


def test_state_carries_over_calls_and_reset_starts_afresh(one_thread):
    backbone, head = random_model('xs')
    net = ContinualX3D(backbone, head, 2, 3)
    clip = torch.randn(2, 3, 12, 32, 32)
    whole = net(clip)
    net.reset()
    parts = torch.cat([net(clip[:, :, :5]), net(clip[:, :, 5:])], dim=1)
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=0)
    assert net.frames_seen == 12
    net.reset()
    # The batch is independent samples: the second alone gives its row.
    alone = net(clip[1:])
    torch.testing.assert_close(alone[0], whole[1], atol=1e-5, rtol=0)


def test_continual_network_is_a_copy():
    """The continual network works on copies, unpadded in time."""
    backbone, head = random_model('xs')
    net = ContinualX3D(backbone, head, 4, 4)
    assert backbone.stem.conv_t.padding == (2, 0, 0)
    assert net.backbone.stem.conv_t.padding == (0, 0, 0)
    assert net.backbone.layer1[0].conv2.padding == (0, 1, 1)
    assert net.backbone.stem.conv_t.weight is not backbone.stem.conv_t.weight
    # One-frame kernels run on one frame as 2D convolutions: still Conv3d
    # modules (counted by paper_flops), the original ones untouched.
    assert type(backbone.layer1[0].conv1) is torch.nn.Conv3d
    pointwise = net.backbone.layer1[0].conv1
    assert isinstance(pointwise, torch.nn.Conv3d)
    assert type(pointwise) is not torch.nn.Conv3d
    x = torch.randn(2, 24, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(pointwise(x[:, :, 1:2]),
                                   backbone.layer1[0].conv1(x)[:, :, 1:2])


def test_unpadded_backbone_shapes(one_thread):
    backbone = X3D(arch='xs', temporal_padding=False).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 60, 32, 32))
    assert out.shape == (1, 192, 60 - 56, 1, 1)
    padded = X3D(arch='xs').eval()
    with torch.no_grad():
        assert padded(torch.randn(1, 3, 4, 32, 32)).shape == (1, 192, 4, 1,
                                                              1)


def test_windowed_se_over_the_whole_clip_equals_global_se():
    """A causal window at least as long as the clip gives the global mean
    at the clip's last frame, the frame a continual step ends on."""
    backbone, _ = random_model('xs')
    windowed = X3D(arch='xs', se_window=8)
    windowed.load_state_dict(backbone.state_dict())
    block = backbone.layer1[0]
    x = torch.randn(1, block.conv2.in_channels, 8, 8, 8)
    with torch.no_grad():
        a = block.se(x)
        b = windowed.layer1[0].se(x)
    torch.testing.assert_close(b[:, :, -1], a[:, :, -1])
    assert not torch.allclose(b[:, :, 0], a[:, :, 0])


@pytest.mark.parametrize('arch', ['s', 'm'])
def test_flops_per_frame_at_least_10x_fewer_than_a_clip(arch):
    variant = VARIANTS[arch]
    frames, crop = variant.num_frames, variant.train_crop
    backbone = X3D(arch=arch)
    head = X3DHead(400, 192, 432)
    net = ContinualX3D(backbone, head, frames, frames)
    step = continual_flops(net, (1, 3, crop, crop))
    counts = paper_flops(
        torch.nn.ModuleDict(dict(backbone=backbone, head=head)),
        (1, 3, frames, crop, crop),
        forward=lambda m, x: m['head'](m['backbone'](x)))
    # A padded clip computes every frame of every convolution once per clip
    # and the pooled layers (the SE blocks' and the head's linear layers)
    # once; a step computes one frame of each convolution and the pooled
    # layers once.
    pooled = sum(v for k, v in counts.items()
                 if '.se.' in k or k in ('head.fc1', 'head.fc_cls'))
    assert pooled > 0
    assert counts['total'] == frames * step - (frames - 1) * pooled
    assert counts['total'] / step >= 10
    assert round(counts['total'] / 1e9, 2) == variant.paper_gflops


def test_windows_default_to_the_config_clip_len():
    from mmengine.config import Config

    from x3d_plugin.models import build_x3d_recognizer
    model = build_x3d_recognizer('xs', num_classes=5)
    model.cfg = Config(dict(test_pipeline=[
        dict(type='x3d_plugin.SlowFastSampleFrames', clip_len=6,
             frame_interval=3)
    ]))
    net = continual_from_recognizer(model)
    assert (net.se_window, net.pool_window) == (6, 6)
    assert not net.training
    del model.cfg
    with pytest.raises(ValueError, match='pass se_window and pool_window'):
        continual_from_recognizer(model)
    assert continual_from_recognizer(model, 2, 3).pool_window == 3


def test_errors_name_the_problem():
    backbone, head = random_model('xs')
    with pytest.raises(ValueError, match='se_window must be'):
        ContinualX3D(backbone, head, 0, 4)
    with pytest.raises(TypeError, match='X3DHead'):
        ContinualX3D(backbone, torch.nn.Linear(2, 2), 4, 4)
    with pytest.raises(ValueError, match='se_window must be None'):
        X3D(arch='xs', se_window=0)
    with pytest.raises(ValueError, match='temporal_padding=False'):
        clip_reference(backbone, head, torch.randn(1, 3, 4, 32, 32), 4)
    with pytest.raises(ValueError, match='one frame'):
        ContinualX3D(backbone, head, 4, 4).step(torch.randn(1, 3, 2, 8, 8))
    with pytest.raises(ValueError, match='last stage'):
        ContinualX3D(X3D(arch='xs', out_indices=(2, 3)), head, 4, 4)


def test_folded_bn_gives_the_same_steps(one_thread):
    from x3d_plugin.models import fuse_conv_bn
    backbone, head = random_model('xs')
    net = ContinualX3D(backbone, head, 3, 3)
    folded = torch.nn.ModuleDict(dict(backbone=backbone, head=head)).eval()
    fuse_conv_bn(folded)
    assert isinstance(backbone.stem.bn, torch.nn.Identity)
    net_folded = ContinualX3D(backbone, head, 3, 3)
    clip = torch.randn(1, 3, 10, 32, 32)
    torch.testing.assert_close(net_folded(clip), net(clip), atol=1e-4,
                               rtol=0)
