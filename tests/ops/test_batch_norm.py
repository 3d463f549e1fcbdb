"""The fused channels-last BN (+ residual, ReLU or SiLU) and SE + swish
CPU kernels (:mod:`x3d_plugin.ops.batch_norm`) against the modules they
replace, float64 references, and the places they must not be used.

The tests that need the C++ extension fail (not skip) when it cannot be
built, unless ``X3D_PLUGIN_NO_EXT`` is set.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from x3d_plugin.models import build_x3d_recognizer
from x3d_plugin.models.backbones.x3d import SqueezeExcitation, X3DBlock
from x3d_plugin.ops.batch_norm import (batch_norm_act, set_fast_batch_norm,
                                       squeeze_excite_silu)

CL = torch.channels_last_3d


def _bn(channels, train, momentum=0.1):
    bn = nn.BatchNorm3d(channels, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return bn.train(train)


def _run(fused, bn, x0, act, r0, grad, calls=1):
    """Outputs, gradients and the module's state after ``calls`` forward +
    backward passes, on the fused path or the modules'."""
    set_fast_batch_norm(fused)
    bn = copy.deepcopy(bn)
    for _ in range(calls):
        x = x0.clone().requires_grad_()
        r = None if r0 is None else r0.clone().requires_grad_()
        y = batch_norm_act(x, bn, act, r)
        y.backward(grad)
    set_fast_batch_norm(True)
    return dict(y=y, grad_x=x.grad, grad_res=None if r is None else r.grad,
                grad_w=bn.weight.grad, grad_b=bn.bias.grad,
                mean=bn.running_mean, var=bn.running_var,
                tracked=bn.num_batches_tracked.clone(),
                fn=type(y.grad_fn).__name__)


def _rel(a, b):
    return ((a.double() - b.double()).abs().max() /
            b.double().abs().max().clamp_min(1e-12)).item()


# (N, C, T, H, W): channel counts of X3D (24, 54) and odd ones (3, 13);
# row counts that leave a partial block of the kernels' 32-value period.
SHAPES = [(2, 24, 3, 9, 7), (4, 54, 2, 5, 5), (1, 54, 1, 1, 5),
          (2, 3, 2, 3, 3), (3, 13, 1, 2, 3), (1, 432, 2, 3, 3)]


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('act,residual', [(None, False), (None, True),
                                          ('relu', False), ('relu', True),
                                          ('silu', False)])
def test_fused_bn_equals_the_modules(fast, shape, train, act, residual):
    bn = _bn(shape[1], train)
    x = (torch.randn(shape) * 2 + 3).to(memory_format=CL)
    r = torch.randn(shape).to(memory_format=CL) if residual else None
    g = torch.randn(shape).to(memory_format=CL)
    ours = _run(True, bn, x, act, r, g, calls=2)
    ref = _run(False, bn, x, act, r, g, calls=2)
    assert ours['fn'] == '_BatchNormActBackward'
    assert ref['fn'] != '_BatchNormActBackward'
    assert ours['y'].is_contiguous(memory_format=CL)
    for key in ('y', 'grad_x', 'grad_res', 'grad_w', 'grad_b', 'mean',
                'var'):
        if ref[key] is None:
            assert ours[key] is None, key
            continue
        assert _rel(ours[key], ref[key]) < 1e-5, key
    assert int(ours['tracked']) == int(ref['tracked']) == (2 if train else 0)


def test_cumulative_average_when_momentum_is_none(fast):
    bn = _bn(24, True, momentum=None)
    shape = (2, 24, 2, 4, 4)
    g = torch.randn(shape).to(memory_format=CL)
    x = torch.randn(shape).to(memory_format=CL) * 3 + 1
    ours = _run(True, bn, x, 'relu', None, g, calls=3)
    ref = _run(False, bn, x, 'relu', None, g, calls=3)
    assert _rel(ours['mean'], ref['mean']) < 1e-6
    assert _rel(ours['var'], ref['var']) < 1e-6
    assert int(ours['tracked']) == 3


def test_statistics_keep_their_precision_far_from_zero(fast):
    # 65536 rows of values 1000 +- 1: float32 sums of x and x^2 lose the
    # variance; the kernel's chunked float64 merge must not.
    x = (torch.randn(4, 16, 4, 64, 64, dtype=torch.float64) + 1000)
    bn = _bn(16, True)
    with torch.no_grad():
        y = batch_norm_act(x.float().to(memory_format=CL), bn)
    xf = x.float().double()
    mean = xf.mean(dim=(0, 2, 3, 4), keepdim=True)
    var = xf.var(dim=(0, 2, 3, 4), unbiased=False, keepdim=True)
    w = bn.weight.double().view(1, -1, 1, 1, 1)
    b = bn.bias.double().view(1, -1, 1, 1, 1)
    ref = (xf - mean) / torch.sqrt(var + bn.eps) * w + b
    assert (y.double() - ref).abs().max().item() < 2e-3


@pytest.mark.parametrize('act', [None, 'silu', 'relu'])
def test_bfloat16_against_float64(fast, act):
    shape = (2, 54, 2, 6, 6)
    bn = _bn(54, True)
    x = (torch.randn(shape) * 2).bfloat16().to(memory_format=CL)
    g = torch.randn(shape).bfloat16().to(memory_format=CL)
    xr = x.detach().clone().requires_grad_()
    y = batch_norm_act(xr, bn, act)
    assert y.dtype == torch.bfloat16
    assert type(y.grad_fn).__name__ == '_BatchNormActBackward'
    y.backward(g)
    x64 = x.double().requires_grad_()
    w64 = bn.weight.detach().double().requires_grad_()
    b64 = bn.bias.detach().double().requires_grad_()
    ref = F.batch_norm(x64, None, None, w64, b64, training=True)
    if act == 'relu':
        ref = F.relu(ref)
    elif act == 'silu':
        ref = F.silu(ref)
    ref.backward(g.double())
    # One bfloat16 rounding of the output (2^-8 of its size).
    assert _rel(y, ref) < 8e-3
    if act != 'relu':  # ReLU's mask may differ where bf16 rounds to 0
        assert _rel(xr.grad, x64.grad) < 2e-2
        assert _rel(bn.weight.grad, w64.grad) < 1e-2
    assert _rel(bn.bias.grad, b64.grad) < 1e-2


@pytest.mark.parametrize('shape', [(2, 54, 2, 6, 6), (3, 13, 1, 2, 3)])
def test_bfloat16_outputs_round_to_nearest_even(fast, shape):
    """With gamma 1, beta 0, mean 0, variance 1 and eps 0 the fused BN adds
    the residual in float32 exactly as PyTorch does, so its bfloat16 output
    must be PyTorch's rounding of the same sum bit for bit: in the whole
    vectors (vcvtneps2bf16 on CPUs with AVX512-BF16) and in the partial
    block at the end of (3, 13, 1, 2, 3). NaN stays NaN."""
    bn = nn.BatchNorm3d(shape[1], eps=0.0).eval()
    x = torch.randn(shape).bfloat16().to(memory_format=CL)
    # Residuals of other magnitudes: the sums need rounding (ties too).
    res = (torch.randn(shape) * 2.0**-7).bfloat16().to(memory_format=CL)
    x[0, 1, 0, 1, 0] = float('nan')
    y = batch_norm_act(x.requires_grad_(), bn, None, res)
    assert type(y.grad_fn).__name__ == '_BatchNormActBackward'
    x, y = x.detach(), y.detach()
    ref = (x.float() + res.float()).bfloat16()
    nan = torch.isnan(ref)
    assert nan.sum().item() == 1 and torch.isnan(y)[nan].all()
    assert torch.equal(y[~nan], ref[~nan])
    inexact = (x.float() + res.float()) != ref.float()
    assert inexact.float().mean().item() > 0.5  # rounding was exercised


def test_where_the_modules_run_instead(fast):
    shape = (2, 24, 2, 4, 4)
    x = torch.randn(shape).to(memory_format=CL).requires_grad_()

    class MyBN(nn.BatchNorm3d):
        pass

    def fn(y):
        return type(y.grad_fn).__name__

    bn = _bn(24, True)
    assert fn(batch_norm_act(x, bn, 'relu')) == '_BatchNormActBackward'
    # NCDHW input, a BN subclass, a folded BN, float64, switched off.
    assert fn(batch_norm_act(x.contiguous(), bn, 'relu')) != \
        '_BatchNormActBackward'
    sub = MyBN(24).train()
    assert fn(batch_norm_act(x, sub, 'relu')) != '_BatchNormActBackward'
    y = batch_norm_act(x, nn.Identity(), 'relu')
    assert torch.equal(y, F.relu(x)) and x.grad is None
    x64 = x.detach().double().to(memory_format=CL).requires_grad_()
    assert fn(batch_norm_act(x64, bn.double(), 'relu')) != \
        '_BatchNormActBackward'
    bn.float()
    set_fast_batch_norm(False)
    assert fn(batch_norm_act(x, bn, 'relu')) != '_BatchNormActBackward'


def test_modules_with_hooks_are_called(fast):
    """Hooks on a BN or SE module (precise BN's, a user's) run: the fused
    path steps aside for such modules."""
    x = torch.randn(2, 24, 2, 4, 4).to(memory_format=CL).requires_grad_()
    bn = _bn(24, True)
    seen = []
    handle = bn.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape))
    y = batch_norm_act(x, bn, 'relu')
    assert seen == [x.shape] and type(y.grad_fn).__name__ != \
        '_BatchNormActBackward'
    handle.remove()
    y = batch_norm_act(x, bn, 'relu')
    assert len(seen) == 1 and type(y.grad_fn).__name__ == \
        '_BatchNormActBackward'
    block = X3DBlock(24, 54, 48, spatial_stride=2).to(memory_format=CL)
    block.downsample.register_forward_hook(
        lambda m, args, out: seen.append('downsample'))
    block(x)
    assert seen[-1] == 'downsample'
    se = SqueezeExcitation(24)
    se.register_forward_hook(lambda m, args, out: seen.append('se'))
    y = se.forward_silu(x)
    assert seen[-1] == 'se'
    assert _rel(y, F.silu(se(x))) < 1e-6


def test_precise_bn_sees_every_bn_input(fast):
    """update_bn_stats with the fused kernels on gives the statistics it
    gives with them off."""
    from x3d_plugin.engine.hooks.precise_bn import update_bn_stats
    model = build_x3d_recognizer('xs', num_classes=5)
    batches = [torch.randn(2, 3, 4, 32, 32) for _ in range(2)]
    stats = []
    for fused in (True, False):
        set_fast_batch_norm(fused)
        m = copy.deepcopy(model).train()
        used = update_bn_stats(m, batches,
                               lambda b, m=m: m.cls_head(m.backbone(b)), 2)
        stats.append((used, {n: b.clone() for n, b in m.named_buffers()
                             if 'running' in n}))
    set_fast_batch_norm(True)
    assert stats[0][0] == stats[1][0] == 2
    # Without the pre-hooks running, the statistics would be the forward's
    # momentum update (running_var near 0.9 where these are near 0.01).
    for name, ref in stats[1][1].items():
        assert _rel(stats[0][1][name], ref) < 1e-3, name


def test_bad_arguments_are_named(fast):
    bn = _bn(24, True)
    x = torch.randn(2, 24, 2, 4, 4).to(memory_format=CL)
    with pytest.raises(ValueError, match="act='gelu'.*relu"):
        batch_norm_act(x, bn, 'gelu')
    with pytest.raises(ValueError, match='residual'):
        batch_norm_act(x, bn, 'silu', residual=x)
    # One value per channel while training: PyTorch's own error.
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        batch_norm_act(torch.randn(1, 24, 1, 1, 1), bn, 'relu')


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_squeeze_excite_silu_equals_the_module(fast, dtype):
    shape = (3, 54, 2, 5, 7)
    se = SqueezeExcitation(54)
    x0 = (torch.randn(shape) * 2).to(memory_format=CL)
    g = torch.randn(shape).to(memory_format=CL)
    results = []
    for fused in (True, False):
        set_fast_batch_norm(fused)
        m = copy.deepcopy(se)
        x = x0.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16,
                            enabled=dtype == torch.bfloat16):
            y = m.forward_silu(x.to(dtype))
        y.float().backward(g)
        results.append(dict(y=y.float(), x=x.grad, w1=m.fc1.weight.grad,
                            b2=m.fc2.bias.grad))
    set_fast_batch_norm(True)
    ours, ref = results
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for key in ref:
        assert _rel(ours[key], ref[key]) < tol, key
    # The module's own forward (no swish) is unchanged.
    out = se(x0)
    assert _rel(F.silu(out), F.silu(x0 * se.excite(
        x0.mean(dim=(2, 3, 4), keepdim=True)))) < 1e-6


def test_squeeze_excite_under_autocast_excites_in_float32(fast):
    """Under CPU bf16 autocast the fused SE hands its excitation the mean
    in float32 with autocast off (no bf16 casts of the SE's weights); the
    output and x's gradient stay bfloat16 and match float64. A bfloat16
    model without autocast keeps bfloat16 throughout."""
    seen = []

    def excite(pooled):
        seen.append((pooled.dtype, torch.is_autocast_enabled('cpu')))
        excite.pooled = pooled.detach()
        return torch.sigmoid(pooled * 3.0)

    x0 = torch.randn(2, 16, 2, 3, 3).bfloat16().to(memory_format=CL)
    g = torch.randn(x0.shape).bfloat16().to(memory_format=CL)
    x = x0.clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = squeeze_excite_silu(x, excite)
    assert seen == [(torch.float32, False)]
    assert excite.pooled.shape == (2, 16, 1, 1, 1)
    # The mean of the bfloat16 values in float32 (not rounded to bfloat16).
    assert _rel(excite.pooled, x0.double().mean((2, 3, 4), True)) < 1e-6
    y.backward(g)
    x64 = x0.double().requires_grad_()
    ref = F.silu(x64 * excite(x64.mean((2, 3, 4), keepdim=True)))
    ref.backward(g.double())
    assert y.dtype == x.grad.dtype == torch.bfloat16
    assert _rel(y, ref) < 8e-3 and _rel(x.grad, x64.grad) < 2e-2
    seen.clear()
    squeeze_excite_silu(x0, excite)
    assert seen == [(torch.bfloat16, False)]


@pytest.mark.parametrize('shape', SHAPES + [(2, 54, 4, 20, 20)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_channel_sum_is_a_float32_sum_per_sample_and_channel(
        fast, shape, dtype):
    from x3d_plugin.ops import cpu_extension
    x = (torch.randn(shape) + 0.5).to(dtype).to(memory_format=CL)
    got = cpu_extension.bn_kernels().channel_sum(x)
    assert got.dtype == torch.float32 and got.shape == shape[:2]
    ref = x.double().sum((2, 3, 4))
    assert _rel(got, ref) < 1e-6
    with pytest.raises(RuntimeError, match='channels-last-3d'):
        cpu_extension.bn_kernels().channel_sum(x.contiguous())


def test_squeeze_excite_silu_without_the_pooling_gradient(fast):
    # Only the scaling's path reaches x when the pooled input is detached
    # inside ``excite``: the pooling's backward is then never called and
    # x must still get the scaling's gradient.
    x = torch.randn(2, 24, 2, 3, 3).to(memory_format=CL).requires_grad_()
    s = torch.rand(2, 24, 1, 1, 1)
    y = squeeze_excite_silu(x, lambda pooled: s + 0 * pooled)
    y.sum().backward()
    xr = x.detach().clone().requires_grad_()
    F.silu(xr * s).sum().backward()
    assert _rel(x.grad, xr.grad) < 1e-5


@pytest.mark.parametrize('use_se,stride', [(True, 2), (False, 1)])
def test_x3d_block_training_step_equals_the_modules(fast, use_se, stride):
    """An X3D block's forward and backward with the fused kernels, with the
    modules, and with the modules in float64: the fused kernels' error is
    of the size of the modules' own float32 error. (Some of these gradients
    are nearly zero sums, e.g. bn1's weight, which bn2 normalises away;
    whole random networks are compared by their loss only: in training
    mode their gradients change by 30% under a 1e-6 change of the input.)
    """
    block = X3DBlock(24, 54, 24 * stride, spatial_stride=stride,
                     use_se=use_se).to(memory_format=CL)
    x0 = torch.randn(2, 24, 4, 12, 12).to(memory_format=CL)
    states = []
    for fused, dtype in ((True, torch.float32), (False, torch.float32),
                         (False, torch.float64)):
        set_fast_batch_norm(fused)
        m = copy.deepcopy(block).to(dtype).train()
        x = x0.to(dtype).clone().requires_grad_()
        y = m(x)
        y.backward(torch.ones_like(y) / y.numel() + y.detach())
        states.append(dict(y=y, x=x.grad,
                           **{n: p.grad for n, p in m.named_parameters()},
                           **{n: b for n, b in m.named_buffers()}))
    set_fast_batch_norm(True)
    ours, mods, ref = states
    assert len(ref) > 12 + 4 * use_se
    for key in ref:
        if not ref[key].is_floating_point():
            assert torch.equal(ours[key], ref[key]), key
            continue
        err = (ours[key].double() - ref[key]).abs().max().item()
        err_modules = (mods[key].double() - ref[key]).abs().max().item()
        scale = ref[key].abs().max().item()
        assert err <= 4 * err_modules + 1e-6 * scale, key


def test_x3d_loss_equals_the_modules(fast):
    model = build_x3d_recognizer('xs', num_classes=7)
    x = torch.randn(2, 3, 4, 32, 32)
    losses = []
    for fused in (True, False):
        set_fast_batch_norm(fused)
        m = copy.deepcopy(model).train()
        torch.manual_seed(1)  # the head's dropout
        losses.append(F.cross_entropy(m.cls_head(m.backbone(x)),
                                      torch.tensor([1, 5])).item())
    set_fast_batch_norm(True)
    assert abs(losses[0] - losses[1]) < 1e-4 * abs(losses[1])
