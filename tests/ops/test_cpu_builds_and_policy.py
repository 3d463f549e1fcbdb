"""The CPU builds of the channelwise conv3d kernels (8 and 16 lanes, the
AVX2 build beside the AVX-512 one), bfloat16 against float64, and the
forward choice as data (:mod:`x3d_plugin.ops.forward_policy`).

``X3D_PLUGIN_CPU_ISA=avx2 python -m pytest tests/ops/`` runs every test of
this folder on the AVX2 build of an AVX-512 CPU.
"""
import importlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from x3d_plugin.ops import (ChannelwiseConv3d, cpu_extension, forward_policy,
                            set_forward_policy)

# The module (the package's attribute of that name is the function).
cw_mod = importlib.import_module('x3d_plugin.ops.channelwise_conv3d')

CL = torch.channels_last_3d
X3D_OPS = [
    ((3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ((3, 3, 3), (1, 2, 2), (1, 1, 1)),
    ((5, 1, 1), (1, 1, 1), (2, 0, 0)),
]


def kernel_sets():
    narrow, wide = cpu_extension._LOADED[cpu_extension.active_isa()]
    return [('lanes8', narrow)] + ([('lanes16', wide)] if wide else [])


def reference64(x, w, stride, padding, g):
    """Output, grad_input and grad_weight in float64."""
    x = x.detach().double().requires_grad_()
    w = w.detach().double().requires_grad_()
    y = F.conv3d(x, w, None, stride, padding, 1, w.shape[0])
    gx, gw = torch.autograd.grad(y, (x, w), g.double())
    return y, gx, gw


def close(a, b, rel, name):
    """|a - b| <= rel * max|b| elementwise (relative to the result's
    scale: sums of many products)."""
    err = (a.double() - b).abs().max().item()
    scale = max(1e-12, b.abs().max().item())
    assert err <= rel * scale, f'{name}: max error {err:.3g}, scale {scale:.3g}'


@pytest.mark.parametrize('kernel,stride,padding', X3D_OPS)
@pytest.mark.parametrize('channels', [5, 16, 24, 48, 54, 80, 432])
def test_every_kernel_set_float32_against_float64(fast, kernel, stride,
                                                  padding, channels):
    """Both lane widths of the build in use, at channel counts below,
    at and between multiples of 8 and 16."""
    x = torch.randn(2, channels, 4, 9, 13)
    w = torch.randn(channels, 1, *kernel)
    for name, ops in kernel_sets():
        y = ops.forward(x, w, list(stride), list(padding))
        g = torch.randn_like(y)
        y0, gx0, gw0 = reference64(x, w, stride, padding, g)
        gx, gw = ops.backward(g, x, w, list(stride), list(padding), True,
                              True)
        assert y.is_contiguous(memory_format=CL)
        assert gx.is_contiguous(memory_format=CL) and gw.shape == w.shape
        close(y, y0, 1e-5, f'{name} out')
        close(gx, gx0, 1e-5, f'{name} grad_input')
        close(gw, gw0, 1e-5, f'{name} grad_weight')


@pytest.mark.parametrize('kernel,stride,padding', X3D_OPS)
@pytest.mark.parametrize('channels', [24, 48, 54, 432])
def test_bfloat16_against_float64(fast, kernel, stride, padding, channels):
    """bf16 inputs, float32 accumulation, one rounding to bf16 per result:
    within a few bf16 ulps (2^-8 relative) of the float64 result of the
    same bf16 values."""
    x = torch.randn(2, channels, 4, 9, 13).bfloat16()
    w = torch.randn(channels, 1, *kernel).bfloat16()
    for name, ops in kernel_sets():
        y = ops.forward(x, w, list(stride), list(padding))
        g = torch.randn(y.shape).bfloat16()
        y0, gx0, gw0 = reference64(x, w, stride, padding, g)
        gx, gw = ops.backward(g, x, w, list(stride), list(padding), True,
                              True)
        assert y.dtype == gx.dtype == gw.dtype == torch.bfloat16
        close(y, y0, 2 ** -7, f'{name} out')
        close(gx, gx0, 2 ** -7, f'{name} grad_input')
        close(gw, gw0, 2 ** -7, f'{name} grad_weight')


def test_bfloat16_rounds_to_nearest_even_and_keeps_nan(fast):
    """The store's rounding (one vcvtneps2bf16 on CPUs with AVX512-BF16,
    integer arithmetic elsewhere) is round-to-nearest-even, as torch's
    float32 -> bfloat16 conversion; a NaN stays NaN."""
    c = 32
    # A 1x1x2 kernel of ones sums two bf16 values exactly in float32; the
    # sums below fall at, above and below a half bf16 ulp.
    a = torch.tensor([1.0, 1.0, 1.0, 256.0]).bfloat16()
    b = torch.tensor([2 ** -8, 3 * 2 ** -9, 2 ** -9, 1.0]).bfloat16()
    vals_a = a.repeat(c // 4)
    vals_b = b.repeat(c // 4)
    x = torch.stack([vals_a, vals_b], -1).view(1, c, 1, 1, 2)
    w = torch.ones(c, 1, 1, 1, 2).bfloat16()
    expect = (vals_a.float() + vals_b.float()).bfloat16()
    for name, ops in kernel_sets():
        y = ops.forward(x, w, [1, 1, 1], [0, 0, 0]).flatten()
        assert torch.equal(y, expect), (name, y, expect)
    x = x.clone()
    x[0, 3, 0, 0, 0] = float('nan')
    for name, ops in kernel_sets():
        y = ops.forward(x, w, [1, 1, 1], [0, 0, 0]).flatten()
        assert torch.isnan(y[3]) and not torch.isnan(y[:3]).any(), name


def test_sixteen_lanes_where_they_were_faster(fast):
    """The op calls the 16-lane kernels (in the AVX-512 builds; the 8-lane
    ones elsewhere and in the others) where C % 16 == 0, and in bf16 also
    from 32 channels on."""
    narrow, wide = cpu_extension._LOADED[cpu_extension.active_isa()]
    f32, bf16 = torch.float32, torch.bfloat16
    for channels, dtype in ((8, f32), (24, f32), (54, f32), (216, f32),
                            (24, bf16), (8, bf16)):
        assert cpu_extension.kernels(channels, dtype) is narrow
    for channels, dtype in ((16, f32), (48, f32), (432, f32), (16, bf16),
                            (54, bf16), (216, bf16)):
        assert cpu_extension.kernels(channels, dtype) is (wide or narrow)
    if cpu_extension.active_isa() in ('avx512', 'avx512_bf16'):
        assert wide is not None


def test_build_classes_of_cpu_flags():
    avx512 = ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512dq', 'avx512vl']
    if cpu_extension.platform.machine().lower() not in ('x86_64', 'amd64'):
        pytest.skip('x86 build classes')
    assert cpu_extension.cpu_isas(avx512 + ['avx512_bf16']) == (
        'avx512_bf16', 'avx512', 'avx2', 'generic')
    assert cpu_extension.cpu_isas(avx512) == ('avx512', 'avx2', 'generic')
    assert cpu_extension.cpu_isas(['avx2', 'fma']) == ('avx2', 'generic')
    assert cpu_extension.cpu_isas(['sse2']) == ('generic', )
    flags = cpu_extension.compile_flags('avx2')
    assert '-mavx2' in flags and not any('avx512' in f for f in flags)
    assert '-mavx512bf16' in cpu_extension.compile_flags('avx512_bf16')
    names = {isa: [Path(s).name for s in cpu_extension.sources(isa)]
             for isa in ('avx512', 'avx2')}
    assert names['avx512'] == ['channelwise_conv3d.cpp',
                               'channelwise_conv3d_l16.cpp',
                               'batch_norm_cl.cpp']
    assert names['avx2'] == ['channelwise_conv3d.cpp', 'batch_norm_cl.cpp']


def test_unknown_or_missing_isa_is_refused(monkeypatch):
    monkeypatch.setenv('X3D_PLUGIN_CPU_ISA', 'avx1024')
    with pytest.raises(ValueError, match='not a build class'):
        cpu_extension.cpu_isa()
    monkeypatch.setattr(cpu_extension, 'cpu_isas', lambda: ('generic', ))
    monkeypatch.setenv('X3D_PLUGIN_CPU_ISA', 'avx2')
    with pytest.raises(ValueError, match='this CPU has only generic'):
        cpu_extension.cpu_isa()


@pytest.mark.slow
def test_avx2_build_beside_the_avx512_one(fast):
    """On an AVX-512 CPU the AVX2 build (8 lanes, no AVX-512 instructions)
    loads beside the default one and gives the same float32 results and
    bf16 results within a bf16 ulp (its rounding is integer arithmetic)."""
    if 'avx512' not in cpu_extension.cpu_isas():
        pytest.skip('needs a CPU with AVX-512 (the AVX2 build is the '
                    'default elsewhere)')
    avx2 = cpu_extension.load_isa('avx2')
    for kernel, stride, padding in X3D_OPS:
        for channels, dtype in ((54, torch.float32), (432, torch.float32),
                                (54, torch.bfloat16), (48, torch.bfloat16)):
            x = torch.randn(2, channels, 4, 10, 12).to(dtype)
            w = torch.randn(channels, 1, *kernel).to(dtype)
            ops = cpu_extension.kernels(channels)
            y = ops.forward(x, w, list(stride), list(padding))
            g = torch.randn_like(y)
            ref = avx2.forward(x, w, list(stride), list(padding))
            got = ops.backward(g, x, w, list(stride), list(padding), True,
                               True)
            want = avx2.backward(g, x, w, list(stride), list(padding), True,
                                 True)
            tol = 1e-5 if dtype == torch.float32 else 2 ** -7
            for a, b in zip((y, ) + tuple(got), (ref, ) + tuple(want)):
                close(a, b.double(), tol, f'{kernel} {channels} {dtype}')
    cpu_extension.use_cpu_isa('avx2')
    try:
        m = ChannelwiseConv3d(54, 3, padding=1)
        x = torch.randn(1, 54, 3, 6, 6, requires_grad=True)
        m(x).sum().backward()
        torch.testing.assert_close(
            x.grad,
            torch.nn.grad.conv3d_input(x.shape, m.weight.detach(),
                                       torch.ones(1, 54, 3, 6, 6), 1, 1, 1,
                                       54),
            rtol=1e-5,
            atol=1e-5)
    finally:
        cpu_extension.use_cpu_isa(None)


# ---------------------------------------------------------------------------
# The forward choice as data
# ---------------------------------------------------------------------------
def test_packaged_policy_names_machine_and_command():
    classes = forward_policy.load_policy(forward_policy.POLICY_FILE)
    assert 'avx2' in classes
    for name, entry in classes.items():
        assert entry['machine'] and entry['command'], name
        assert set(entry['rules']) <= {'float32', 'bfloat16'}


def test_rules_match_as_documented():
    match = forward_policy.rule_matches
    rule = {'kernel': '3x3x3', 'stride_hw': 2, 'min_width': 7,
            'min_channels': 192}
    assert match(rule, 192, 7, (3, 3, 3), 2)
    assert not match(rule, 191, 7, (3, 3, 3), 2)
    assert not match(rule, 192, 6, (3, 3, 3), 2)
    assert not match(rule, 192, 7, (3, 3, 3), 1)
    assert not match(rule, 192, 7, (3, 3, 5), 2)
    assert match({'kernel': 'Tx1x1'}, 24, 2, (5, 1, 1), 1)
    assert not match({'kernel': 'Tx1x1'}, 24, 2, (5, 3, 1), 1)
    assert match({'kernel': 'any'}, 1, 1, (2, 3, 4), 3)


def test_policy_override_by_env_file_and_function(fast, tmp_path,
                                                  monkeypatch):
    """X3D_PLUGIN_CW_POLICY points at a file whose classes replace the
    packaged ones; set_forward_policy does the same from code."""
    isa = cpu_extension.cpu_isas()[0]
    x = torch.randn(1, 54, 3, 8, 8)
    w = torch.randn(54, 1, 3, 3, 3)
    never = {'classes': {isa: {'machine': 'm', 'command': 'c',
                               'rules': {'float32': [], 'bfloat16': []}}}}
    always = {'classes': {isa: {'machine': 'm', 'command': 'c',
                                'rules': {'float32': [{'kernel': 'any'}]}}}}
    path = tmp_path / 'policy.json'
    path.write_text(json.dumps(always))
    monkeypatch.setenv('X3D_PLUGIN_CW_POLICY', str(path))
    set_forward_policy(None)  # read the file and the variable again
    try:
        assert forward_policy.ours_forward_faster(x, w, (1, 2, 2))
        set_forward_policy(never)
        assert not forward_policy.ours_forward_faster(x, w, (1, 1, 1))
        set_forward_policy(path)
        assert forward_policy.ours_forward_faster(x, w, (1, 1, 1))
        # float64: ours only for kt x 1 x 1 kernels, whatever the file.
        assert not forward_policy.ours_forward_faster(x.double(), w.double(),
                                                      (1, 1, 1))
    finally:
        monkeypatch.delenv('X3D_PLUGIN_CW_POLICY')
        set_forward_policy(None)


def test_bad_policy_files_name_the_fault(tmp_path):
    with pytest.raises(FileNotFoundError, match='measure_cw_policy'):
        forward_policy.load_policy(tmp_path / 'missing.json')
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({'classes': {'avx3': {'rules': {}}}}))
    with pytest.raises(ValueError, match="unknown CPU class 'avx3'"):
        forward_policy.load_policy(bad)
    bad.write_text(json.dumps({'classes': {'avx2': {'rules': {
        'float16': []}}}}))
    with pytest.raises(ValueError, match='float16'):
        forward_policy.load_policy(bad)


def test_missing_class_falls_back_to_avx2(fast):
    set_forward_policy({'classes': {'avx2': {'rules': {
        'float32': [{'kernel': '3x3x3', 'min_channels': 100}]}}}})
    try:
        full = forward_policy.load_policy(forward_policy.POLICY_FILE)
        for isa in ('avx512_bf16', 'avx512', 'generic'):
            name, entry = forward_policy.policy_entry(isa)
            assert name == (isa if isa in full else 'avx2'), isa
    finally:
        set_forward_policy(None)


@pytest.mark.parametrize('ours', [True, False])
def test_bf16_inference_follows_the_choice(fast, ours):
    """Under CPU bf16 autocast, inference runs our forward where the choice
    says so and PyTorch's bf16 convolution elsewhere; both give the
    bf16 result of the same convolution."""
    isa = cpu_extension.cpu_isas()[0]
    rules = [{'kernel': 'any'}] if ours else []
    set_forward_policy({'classes': {isa: {'rules': {'bfloat16': rules}}}})
    calls = []
    real = cpu_extension.kernels

    class Spy:
        def __init__(self, ops):
            self.ops = ops

        def forward(self, *args):
            calls.append(1)
            return self.ops.forward(*args)

    try:
        cpu_extension.kernels = lambda *a: Spy(real(*a))
        m = ChannelwiseConv3d(54, 3, padding=1)
        x = torch.randn(2, 54, 4, 9, 9)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            assert cw_mod._use_op(x, m.weight, m.stride) == ours
            y = m(x)
    finally:
        cpu_extension.kernels = real
        set_forward_policy(None)
    assert calls == ([1] if ours else [])
    assert y.dtype == torch.bfloat16
    y0 = F.conv3d(x.bfloat16().double(), m.weight.bfloat16().double(), None,
                  1, 1, 1, 54)
    close(y, y0, 2 ** -7, 'out')
