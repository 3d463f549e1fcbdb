"""The X3D backbone and head: structure, counts, behaviour of every option,
over every variant (small inputs; FLOPs are counted on the meta device)."""
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from x3d_plugin.models import VARIANTS, X3D, X3DHead
from x3d_plugin.models.complexity import count_parameters, paper_flops

ARCHS = list(VARIANTS)
# Expected values written out independently of the variant table, which
# they check. Paper Table 3: stage widths, inner widths, blocks.
STRUCTURE = {
    'xs': ((24, 48, 96, 192), (54, 108, 216, 432), (3, 5, 11, 7)),
    's': ((24, 48, 96, 192), (54, 108, 216, 432), (3, 5, 11, 7)),
    'm': ((24, 48, 96, 192), (54, 108, 216, 432), (3, 5, 11, 7)),
    'l': ((24, 48, 96, 192), (54, 108, 216, 432), (5, 10, 25, 15)),
    'xl': ((32, 72, 136, 280), (72, 162, 306, 630), (5, 10, 25, 15)),
}
# Parameters at 400 classes: XS/S/M and L from PySlowFast's models (the
# shared reference checkpoint has 3,794,322); XL from the Table 3 widths.
PARAMS = {'xs': 3_794_322, 's': 3_794_322, 'm': 3_794_322, 'l': 6_153_432,
          'xl': 11_095_904}
# Paper Table 4 GFLOPs and the clip each is measured on (frames, crop).
GFLOPS = {'xs': (0.60, 4, 160), 's': (1.96, 13, 160), 'm': (4.73, 16, 224),
          'l': (18.37, 16, 312), 'xl': (35.84, 16, 312)}


@pytest.mark.parametrize('arch', ARCHS)
def test_variant_table_holds_the_paper_values(arch):
    variant = VARIANTS[arch]
    structure = variant.structure
    assert (structure.stage_widths, structure.inner_widths,
            structure.stage_blocks) == STRUCTURE[arch]
    assert (structure.head_in_channels, structure.head_mid_channels) == (
        STRUCTURE[arch][0][-1], STRUCTURE[arch][1][-1])
    assert (variant.paper_gflops, *variant.train_input[:2]) == GFLOPS[arch]
    assert variant.paper_params_m == pytest.approx(PARAMS[arch] / 1e6,
                                                   abs=0.01)


def build(arch, num_classes=400, **kwargs):
    backbone = X3D(arch=arch, **kwargs)
    head = X3DHead(num_classes, backbone.stage_widths[-1],
                   backbone.inner_widths[-1])
    return backbone, head


def clip(n=2, t=4, size=32, **kwargs):
    return torch.randn(n, 3, t, size, size, **kwargs)


@pytest.mark.parametrize('arch', ARCHS)
def test_structure_and_parameter_count(arch):
    backbone, head = build(arch)
    assert (backbone.stage_widths, backbone.inner_widths,
            backbone.stage_blocks) == STRUCTURE[arch]
    for i, blocks in enumerate(STRUCTURE[arch][2]):
        layer = getattr(backbone, f'layer{i + 1}')
        assert len(layer) == blocks
        # SE on every other block, starting with the first.
        assert [b.se is not None for b in layer] == [
            j % 2 == 0 for j in range(blocks)]
        assert layer[0].conv2.stride == (1, 2, 2)
        assert layer[0].conv2.groups == STRUCTURE[arch][1][i]
    assert count_parameters(backbone) + count_parameters(head) == PARAMS[arch]


@pytest.mark.parametrize('arch', ARCHS)
def test_flops_match_paper(arch):
    variant = VARIANTS[arch]
    backbone, head = build(arch)
    counts = paper_flops(
        nn.Sequential(backbone, head), (1, 3, *variant.train_input))
    assert counts['total'] / 1e9 == pytest.approx(variant.paper_gflops,
                                                   rel=0.01)


def test_flop_counter_agrees_with_mmengine():
    """Our meta-device counter against MMEngine's FlopAnalyzer (conv and
    linear operators only) on a small real forward."""
    from mmengine.analysis import FlopAnalyzer
    backbone, head = build('xs', num_classes=10)
    model = nn.Sequential(backbone, head).eval()
    x = clip(n=1, t=4, size=64)
    analyzer = FlopAnalyzer(model, (x, ))
    by_op = analyzer.by_operator()
    mm_total = sum(v for k, v in by_op.items()
                   if k in ('conv', 'linear', 'matmul', 'addmm'))
    assert paper_flops(model, x.shape)['total'] == mm_total


@pytest.mark.parametrize('arch', ARCHS)
def test_forward_backward(arch):
    backbone, head = build(arch, num_classes=7)
    backbone.init_weights()
    head.init_weights()
    x = clip(t=4, size=32)
    feat = backbone(x)
    assert feat.shape == (2, STRUCTURE[arch][0][-1], 4, 1, 1)
    scores = head(feat)
    assert scores.shape == (2, 7)
    assert torch.isfinite(scores).all()
    scores.sum().backward()
    for module in (backbone, head):
        for name, p in module.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name


def test_output_shapes_m_and_out_indices():
    backbone = X3D(arch='m', out_indices=(0, 1, 2, 3))
    outs = backbone(clip(n=1, t=4, size=64))
    assert [tuple(o.shape) for o in outs] == [
        (1, 24, 4, 16, 16), (1, 48, 4, 8, 8), (1, 96, 4, 4, 4),
        (1, 192, 4, 2, 2)]
    single = X3D(arch='m', out_indices=(1, ))
    assert single.out_channels == 48
    assert single(clip(n=1, size=64)).shape == (1, 48, 4, 8, 8)
    # The head uses the deepest of several outputs.
    head = X3DHead(5, 192, 432)
    assert head(outs).shape == (1, 5)


@pytest.mark.parametrize('arch', ['xs', 'l'])
def test_with_cp_same_outputs_gradients_and_bn_stats(arch):
    plain = X3D(arch=arch)
    plain.init_weights()
    for m in plain.modules():  # non-trivial BN so the stats matter
        if isinstance(m, _BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
    ckpt = X3D(arch=arch, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = clip(t=4, size=32)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out1, out2 = plain(x1), ckpt(x2)
    torch.testing.assert_close(out1, out2)
    weight = torch.randn_like(out1)
    (out1 * weight).sum().backward()
    (out2 * weight).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    grads2 = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(p.grad, grads2[name].grad, msg=name)
    buffers2 = dict(ckpt.named_buffers())
    for name, b in plain.named_buffers():
        torch.testing.assert_close(b, buffers2[name], msg=name)


def test_frozen_stages():
    backbone = X3D(arch='xs', frozen_stages=2)
    backbone.train()
    frozen = [backbone.stem, backbone.layer1, backbone.layer2]
    for module in frozen:
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    for module in (backbone.layer3, backbone.layer4):
        assert module.training
        assert all(p.requires_grad for p in module.parameters())
    before = backbone.layer1[0].bn1.running_mean.clone()
    backbone(clip())
    torch.testing.assert_close(backbone.layer1[0].bn1.running_mean, before)


def test_norm_eval_keeps_running_stats():
    backbone = X3D(arch='xs', norm_eval=True)
    backbone.train()
    assert all(not m.training for m in backbone.modules()
               if isinstance(m, _BatchNorm))
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone(clip())
    for k, v in backbone.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=k)
    # Parameters still train.
    assert all(p.requires_grad for p in backbone.parameters())


def test_zero_init_residual():
    backbone = X3D(arch='xs')
    backbone.init_weights()
    assert all(float(b.bn3.weight.detach().abs().sum()) == 0
               for layer in (backbone.layer1, backbone.layer4) for b in layer)
    backbone = X3D(arch='xs', zero_init_residual=False)
    backbone.init_weights()
    assert float(backbone.layer1[0].bn3.weight.detach().sum()) == 24


def test_channels_last_input_keeps_memory_format():
    backbone, head = build('xs', num_classes=3)
    backbone.eval()
    head.eval()
    x = clip(t=4, size=64)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    outs = X3D(arch='xs', out_indices=(0, 1, 2, 3))
    outs.load_state_dict(backbone.state_dict())
    outs.eval()
    with torch.no_grad():
        for feat in outs(x_cl):
            assert feat.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(
            head(backbone(x_cl)), head(backbone(x)), atol=1e-5, rtol=1e-5)
    # The weights are stored channels-last too (torch.compile picks its
    # kernels by them), and survive loading a contiguous state dict.
    # (The stem's 3-channel 1x3x3 kernel is laid out differently in the
    # two formats; a channelwise kernel is the same in both.)
    stem = outs.stem.conv_xy.weight
    assert stem.is_contiguous(memory_format=torch.channels_last_3d)
    assert not stem.is_contiguous()
    plain = X3D(arch='xs', channels_last=False)
    assert plain.stem.conv_xy.weight.is_contiguous()
    outs.load_state_dict(plain.state_dict())
    assert outs.stem.conv_xy.weight.is_contiguous(
        memory_format=torch.channels_last_3d)
    assert torch.equal(outs.stem.conv_xy.weight, plain.stem.conv_xy.weight)


def test_swish_saves_only_its_input():
    from x3d_plugin.models.backbones.x3d import swish
    saved = []

    def pack(t):
        saved.append(t)
        return t

    x = torch.randn(2, 8, 3, 4, 4, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = swish(x)
    assert len(saved) == 1 and saved[0] is x
    torch.testing.assert_close(y, x * torch.sigmoid(x))
    y.sum().backward()
    s = torch.sigmoid(x)
    torch.testing.assert_close(x.grad, s * (1 + x * (1 - s)))


@pytest.mark.parametrize('arch, message', [
    ('xxl', 'unknown X3D arch'),
    (dict(width_factor=2.0, depth_factor=0, bottleneck_factor=2.25),
     'must be a positive number'),
    (dict(width_factor=-1.0, depth_factor=2.2, bottleneck_factor=2.25),
     'must be a positive number'),
    (dict(width_factor=2.0, depth_factor=2.2), 'needs exactly the keys'),
])
def test_bad_arch_is_a_clear_error(arch, message):
    with pytest.raises(ValueError, match=message):
        X3D(arch=arch)


def test_explicit_factors_equal_named_arch():
    named = X3D(arch='l')
    explicit = X3D(arch=dict(width_factor=2, depth_factor=5,
                             bottleneck_factor=2.25))
    assert named.stage_blocks == explicit.stage_blocks
    assert count_parameters(named) == count_parameters(explicit)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match='out_indices'):
        X3D(out_indices=(4, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        X3D(frozen_stages=5)
    with pytest.raises(ValueError, match='num_classes'):
        X3DHead(0, 192)


def test_syncbn_norm_cfg_builds():
    backbone = X3D(arch='xs', norm_cfg=dict(type='SyncBN'))
    assert isinstance(backbone.layer1[0].bn1, nn.SyncBatchNorm)


def test_head_dropout_and_fc_widths():
    head = X3DHead(11, 192, 432, fc_channels=64, dropout_ratio=0.0)
    assert head.dropout is None
    assert head.fc1.weight.shape == (64, 432) and head.fc1.bias is None
    assert head.fc_cls.weight.shape == (11, 64)


def test_detection_strides_keep_the_checkpoint_layout():
    """AVA's detection backbone (configs/detection): the last stage at
    spatial stride 1 with dilation 2 doubles the last map's size and loads
    the classification model's weights strictly."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 64, 64)
    default = X3D('m').eval()
    det = X3D('m', spatial_strides=(2, 2, 2, 1),
              spatial_dilations=(1, 1, 1, 2)).eval()
    det.load_state_dict(default.state_dict(), strict=True)
    with torch.no_grad():
        assert default(x).shape == (1, 192, 4, 2, 2)
        assert det(x).shape == (1, 192, 4, 4, 4)
    conv = det.layer4[-1].conv2
    assert conv.dilation == (1, 2, 2) and conv.padding == (1, 2, 2)
    with pytest.raises(ValueError, match='spatial_strides'):
        X3D('m', spatial_strides=(2, 2, 2))
