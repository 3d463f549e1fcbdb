"""The fast channelwise conv3d CPU operator against ``F.conv3d``.

The tests that need the C++ extension fail (not skip) when it cannot be
built, unless ``X3D_PLUGIN_NO_EXT=1`` is set: CI must exercise the build.
"""
import importlib
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from x3d_plugin.ops import (ChannelwiseConv3d, channelwise_conv3d,
                            cpu_extension, extension_error,
                            fast_channelwise_available, forward_policy,
                            set_fast_channelwise, set_forward_policy)

cw_mod = importlib.import_module('x3d_plugin.ops.channelwise_conv3d')
CL = torch.channels_last_3d


# The forward choice of the AVX2 class, used where a test checks which
# forward runs (the packaged choice differs between CPU classes).
AVX2_RULES = {
    'float32': [
        {'kernel': 'Tx1x1'},
        {'kernel': '3x3x3', 'stride_hw': 1, 'min_width': 6},
        {'kernel': '3x3x3', 'stride_hw': 2, 'min_width': 7,
         'min_channels': 192},
    ],
    'bfloat16': [{'kernel': 'any'}],
}


@pytest.fixture
def avx2_choice(fast):
    """The AVX2 class's forward choice on whatever CPU runs the tests."""
    isa = cpu_extension.cpu_isas()[0]
    set_forward_policy({'classes': {isa: {'rules': AVX2_RULES}}})
    yield
    set_forward_policy(None)


def kernel_sets():
    """(name, ops) of each set of kernels of the build in use: its 8-lane
    kernels and, in the AVX-512 builds, the 16-lane ones (which the op
    calls where C is a multiple of 16; here they run at every C)."""
    assert fast_channelwise_available(), extension_error()
    narrow, wide = cpu_extension._LOADED[cpu_extension.active_isa()]
    return [('lanes8', narrow)] + ([('lanes16', wide)] if wide else [])


def reference(x, w, stride, padding):
    """F.conv3d and its gradients for a fixed upstream gradient."""
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = F.conv3d(x, w, None, stride, padding, 1, w.shape[0])
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    return y, g, gx, gw


def run(via, x, w, stride, padding):
    """The convolution through the custom op (what torch.compile records)
    or through :func:`channelwise_conv3d` (eager: the op's kernels in an
    autograd.Function)."""
    if via == 'op':
        return torch.ops.x3d_plugin.channelwise_conv3d(x, w, stride, padding)
    calls = []
    real = cw_mod._EagerCpuConv.apply

    def spy(*args):
        calls.append(1)
        return real(*args)

    cw_mod._EagerCpuConv.apply = spy
    try:
        y = channelwise_conv3d(x, w, stride, padding)
    finally:
        cw_mod._EagerCpuConv.apply = real
    assert calls == [1], 'the eager path did not run'
    return y


def kernel_forward_calls(fn):
    """``fn()`` and the (stride, padding) of each call it made to the C++
    forward."""
    calls = []
    real = cpu_extension.kernels

    class Spy:
        def __init__(self, ops):
            self.ops = ops

        def forward(self, *args):
            calls.append(args[2:])
            return self.ops.forward(*args)

        def backward(self, *args):
            return self.ops.backward(*args)

    cpu_extension.kernels = lambda *a: Spy(real(*a))
    try:
        return fn(), calls
    finally:
        cpu_extension.kernels = real


def ours(x, w, stride, padding, g, via='op'):
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = run(via, x, w, stride, padding)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    return y, gx, gw


def check(x, w, stride, padding, rtol=1e-4, atol=1e-4, via='op'):
    y0, g, gx0, gw0 = reference(x, w, stride, padding)
    y, gx, gw = ours(x, w, stride, padding, g, via)
    assert y.is_contiguous(memory_format=CL)
    # Tolerances relative to each result's magnitude (grad_weight sums
    # many products).
    for name, a, b in (('out', y, y0), ('grad_input', gx, gx0),
                       ('grad_weight', gw, gw0)):
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(
            a, b, rtol=rtol, atol=atol * scale, msg=lambda m: f'{name}: {m}')


# Every X3D kernel/stride/padding combination.
X3D_OPS = [
    ((3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ((3, 3, 3), (1, 2, 2), (1, 1, 1)),
    ((5, 1, 1), (1, 1, 1), (2, 0, 0)),
]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('kernel,stride,padding', X3D_OPS)
@pytest.mark.parametrize('channels', [13, 54, 216])
def test_kernel_forward_itself(fast, dtype, kernel, stride, padding,
                               channels):
    """The op's float forward of a 3x3x3 kernel runs F.conv3d at the
    shapes where that is faster; the C++ forward (every other forward, and
    the row kernel that grad_input shares) is checked directly at every
    width."""
    x = torch.randn(2, channels, 5, 9, 7, dtype=dtype)
    w = torch.randn(channels, 1, *kernel, dtype=dtype)
    y0 = F.conv3d(x, w, None, stride, padding, 1, channels)
    for name, ops in kernel_sets():
        y = ops.forward(x, w, list(stride), list(padding))
        assert y.is_contiguous(memory_format=CL), name
        torch.testing.assert_close(y, y0, rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('via', ['op', 'eager'])
@pytest.mark.parametrize('kernel,stride,padding', X3D_OPS)
@pytest.mark.parametrize('channels', [24, 54, 108, 216, 432])
def test_x3d_shapes(fast, kernel, stride, padding, channels, via):
    x = torch.randn(2, channels, 4, 10, 10)
    w = torch.randn(channels, 1, *kernel)
    check(x, w, stride, padding, via=via)


@pytest.mark.parametrize('channels,width,stride,ours_runs', [
    (54, 6, 1, True),
    (54, 5, 1, False),
    (216, 7, 2, True),
    (192, 12, 2, True),
    (216, 6, 2, False),
    (108, 12, 2, False),
])
@pytest.mark.parametrize('grad', [True, False])
def test_float_forward_choice(avx2_choice, channels, width, stride,
                              ours_runs, grad):
    """A float32 3x3x3 forward runs the C++ kernel at stride 1 on frames at
    least 6 wide and at stride 2 from 192 channels on frames at least 7
    wide (faster than oneDNN's there), in training and inference, and
    F.conv3d otherwise; the result is the same."""
    stride = (1, stride, stride)
    x = torch.randn(1, channels, 3, 5, width, requires_grad=grad)
    w = torch.randn(channels, 1, 3, 3, 3)
    y, calls = kernel_forward_calls(
        lambda: channelwise_conv3d(x, w, stride, 1))
    assert calls == ([(list(stride), [1, 1, 1])] if ours_runs else [])
    torch.testing.assert_close(
        y, F.conv3d(x, w, None, stride, 1, 1, channels), rtol=1e-4,
        atol=1e-4)


@pytest.mark.parametrize('channels', [3, 13, 30, 72, 162])
@pytest.mark.parametrize('kernel,stride,padding', X3D_OPS)
def test_channel_tails(fast, kernel, stride, padding, channels):
    """C < 8 and C not a multiple of 8 (XL widths 162, 306, 630)."""
    x = torch.randn(1, channels, 3, 7, 9)
    w = torch.randn(channels, 1, *kernel)
    check(x, w, stride, padding)


@pytest.mark.parametrize('hw', [(7, 9), (5, 5), (11, 3), (1, 1), (2, 3)])
def test_stride2_odd_sizes(fast, hw):
    x = torch.randn(1, 16, 3, *hw)
    w = torch.randn(16, 1, 3, 3, 3)
    check(x, w, (1, 2, 2), (1, 1, 1))


def test_wide_rows_and_batch(fast):
    """Rows long enough for every blocked path (8, 4 and 1 outputs)."""
    x = torch.randn(3, 40, 5, 6, 29)
    w = torch.randn(40, 1, 3, 3, 3)
    check(x, w, (1, 1, 1), (1, 1, 1))
    check(x, w, (1, 2, 2), (1, 1, 1))


@pytest.mark.parametrize('stride', [(1, 1, 1), (1, 2, 2)])
@pytest.mark.parametrize('width', list(range(7, 18)))
def test_row_tails(fast, width, stride):
    """Every way a row of 7-17 outputs splits into blocks of 8 and 4, the
    border blocks (first output without tap 0, last without tap 2) and the
    edge groups, in float64 against F.conv3d."""
    x = torch.randn(1, 8, 3, 3, width, dtype=torch.float64)
    w = torch.randn(8, 1, 3, 3, 3, dtype=torch.float64)
    check(x, w, stride, (1, 1, 1), rtol=1e-10, atol=1e-10)  # grad_input
    y0 = F.conv3d(x, w, None, stride, 1, 1, 8)
    g = torch.randn_like(y0)
    gx0 = torch.nn.grad.conv3d_input(x.shape, w, g, stride, 1, 1, 8)
    for name, ops in kernel_sets():
        y = ops.forward(x, w, list(stride), [1, 1, 1])
        torch.testing.assert_close(y, y0, rtol=1e-10, atol=1e-10,
                                   msg=lambda m: f'{name}: {m}')
        gx, _ = ops.backward(g, x, w, list(stride), [1, 1, 1], True, False)
        torch.testing.assert_close(gx, gx0, rtol=1e-10, atol=1e-10,
                                   msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('kernel,stride,padding', [
    ((3, 3, 3), (1, 2, 2), (1, 1, 1)),
    ((3, 3, 3), (1, 2, 2), (0, 0, 0)),  # H rows past the last window
    ((2, 3, 4), (2, 1, 3), (0, 2, 1)),
    ((3, 1, 3), (3, 3, 3), (1, 0, 1)),
    ((5, 1, 1), (1, 1, 1), (2, 0, 0)),
])
def test_one_pass_backward(fast, threads, kernel, stride, padding):
    """Batches with many H lines: grad_input and grad_weight come from one
    pass over the lines (a chunk of lines per thread), where each output
    line owns the input lines it starts; lines the last window does not
    reach belong to the last line."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(4, 12, 5, 10, 7)
        check(x, torch.randn(12, 1, *kernel), stride, padding)
    finally:
        torch.set_num_threads(before)


def test_other_geometries(fast):
    """Not used by X3D, but the operator is general."""
    x = torch.randn(2, 20, 5, 6, 7)
    check(x, torch.randn(20, 1, 2, 3, 4), (2, 1, 3), (0, 2, 1))
    check(x, torch.randn(20, 1, 1, 5, 5), (1, 1, 1), (0, 2, 2))
    check(x, torch.randn(20, 1, 3, 3, 3), (1, 1, 1), (0, 0, 0))
    check(x, torch.randn(20, 1, 3, 1, 3), (3, 3, 3), (1, 0, 1))


@pytest.mark.parametrize('via', ['op', 'eager'])
def test_layouts_and_noncontiguous(fast, via):
    x = torch.randn(2, 54, 4, 8, 8)
    w = torch.randn(54, 1, 3, 3, 3)
    check(x, w, (1, 1, 1), (1, 1, 1), via=via)  # NCDHW
    check(x.contiguous(memory_format=CL), w, (1, 2, 2), (1, 1, 1), via=via)
    big = torch.randn(2, 60, 6, 9, 8)
    sliced = big[:, 3:57, 1:5, :8]  # neither layout
    assert not sliced.is_contiguous()
    check(sliced, w, (1, 1, 1), (1, 1, 1), via=via)
    permuted = torch.randn(2, 8, 8, 4, 54).permute(0, 4, 3, 1, 2)
    check(permuted, w, (1, 2, 2), (1, 1, 1), via=via)
    check(x, w.transpose(2, 4).contiguous().transpose(2, 4), (1, 1, 1),
          (1, 1, 1), via=via)


@pytest.mark.parametrize('via', ['op', 'eager'])
def test_needs_input_grad(fast, via):
    """Only the asked-for gradient is computed (frozen weight / input)."""
    x = torch.randn(1, 16, 3, 6, 6)
    w = torch.randn(16, 1, 3, 3, 3)
    y0, g, gx0, gw0 = reference(x, w, (1, 1, 1), (1, 1, 1))
    xr = x.clone().requires_grad_()
    y = run(via, xr, w, (1, 1, 1), (1, 1, 1))
    (gx, ) = torch.autograd.grad(y, xr, g)
    torch.testing.assert_close(gx, gx0, rtol=1e-4, atol=1e-4)
    wr = w.clone().requires_grad_()
    y = run(via, x, wr, (1, 1, 1), (1, 1, 1))
    (gw, ) = torch.autograd.grad(y, wr, g)
    torch.testing.assert_close(gw, gw0, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('via', ['op', 'eager'])
@pytest.mark.parametrize('kernel,stride,padding', X3D_OPS)
def test_gradcheck_float64(fast, kernel, stride, padding, via):
    x = torch.randn(1, 9, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 1, *kernel, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: run(via, a, b, stride, padding), (x, w))


def test_bfloat16_autocast(fast):
    m = ChannelwiseConv3d(54, 3, stride=(1, 2, 2), padding=1)
    x = torch.randn(2, 54, 4, 9, 9)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y0 = F.conv3d(x, m.weight, None, m.stride, m.padding, 1, 54)
        y = m(x)
    assert y.dtype == y0.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(
        y.float(), y0.float(), rtol=2e-2, atol=2e-2 * y0.abs().max().item())
    # Backward through the autocast cast (grads come back in fp32).
    xr = x.clone().requires_grad_()
    w0 = m.weight.detach().clone().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = m(xr)
        y0 = F.conv3d(x, w0, None, m.stride, m.padding, 1, 54)
    y.float().sum().backward()
    y0.float().sum().backward()
    assert xr.grad.dtype == torch.float32
    torch.testing.assert_close(
        m.weight.grad, w0.grad, rtol=3e-2,
        atol=3e-2 * w0.grad.abs().max().item())


def test_bfloat16_direct(fast):
    x = torch.randn(1, 24, 5, 6, 6).bfloat16()
    w = torch.randn(24, 1, 5, 1, 1).bfloat16()
    y = channelwise_conv3d(x, w, 1, (2, 0, 0))
    y0 = F.conv3d(x.float(), w.float(), None, 1, (2, 0, 0), 1, 24)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y0, rtol=1e-2, atol=2e-2)


def test_opcheck(fast):
    x = torch.randn(1, 9, 3, 5, 5, requires_grad=True)
    w = torch.randn(9, 1, 3, 3, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.x3d_plugin.channelwise_conv3d.default,
                          (x, w, [1, 2, 2], [1, 1, 1]))
    g = torch.randn(1, 9, 3, 3, 3)
    torch.library.opcheck(
        torch.ops.x3d_plugin.channelwise_conv3d_backward.default,
        (g, x.detach(), w.detach(), [1, 2, 2], [1, 1, 1], True, True))


def test_module_is_a_conv3d(fast):
    torch.manual_seed(1)
    m = ChannelwiseConv3d(54, (3, 3, 3), stride=(1, 2, 2), padding=1)
    torch.manual_seed(1)
    ref = nn.Conv3d(54, 54, 3, (1, 2, 2), 1, groups=54, bias=False)
    assert isinstance(m, nn.Conv3d)
    assert m.state_dict().keys() == ref.state_dict().keys()
    torch.testing.assert_close(m.weight, ref.weight)  # same init
    x = torch.randn(2, 54, 4, 9, 9)
    y = m(x)
    assert y.is_contiguous(memory_format=CL)  # the fast path ran
    torch.testing.assert_close(y, ref(x), rtol=1e-4, atol=1e-4)
    y.sum().backward()
    ref(x).sum().backward()
    torch.testing.assert_close(m.weight.grad, ref.weight.grad, rtol=1e-4,
                               atol=1e-3)


def test_module_with_bias_uses_conv3d(fast):
    m = ChannelwiseConv3d(8, 3, padding=1, bias=True)
    x = torch.randn(1, 8, 3, 5, 5)
    ref = F.conv3d(x, m.weight, m.bias, 1, 1, 1, 8)
    assert torch.equal(m(x), ref)


def test_runtime_switch_falls_back(fast):
    m = ChannelwiseConv3d(16, 3, stride=(1, 2, 2), padding=1)
    x = torch.randn(1, 16, 3, 7, 7)
    ref = F.conv3d(x, m.weight, None, m.stride, m.padding, 1, 16)
    set_fast_channelwise(False)
    y = m(x)
    assert torch.equal(y, ref)
    assert torch.equal(channelwise_conv3d(x, m.weight, (1, 2, 2), 1), ref)
    set_fast_channelwise(True)
    torch.testing.assert_close(m(x), ref, rtol=1e-4, atol=1e-4)


def test_build_failure_warns_once_and_falls_back(monkeypatch):
    """A failed build warns once (naming the fix) and uses F.conv3d."""
    monkeypatch.setattr(cpu_extension, '_STATE', {
        'loaded': None,
        'error': None,
        'warned': False
    })

    def broken(isa):
        raise RuntimeError('Ninja is required to load C++ extensions')

    monkeypatch.setattr(cpu_extension, '_load_extension', broken)
    monkeypatch.delenv('X3D_PLUGIN_NO_EXT', raising=False)
    m = ChannelwiseConv3d(8, 3, padding=1)
    x = torch.randn(1, 8, 3, 5, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        y = m(x)
        y2 = m(x)
    msgs = [str(w.message) for w in caught
            if issubclass(w.category, UserWarning)]
    assert len(msgs) == 1 and 'pip install ninja' in msgs[0], msgs
    ref = F.conv3d(x, m.weight, None, 1, 1, 1, 8)
    assert torch.equal(y, ref) and torch.equal(y2, ref)
    assert 'Ninja' in extension_error()


def test_no_ext_env_forces_fallback(monkeypatch):
    monkeypatch.setattr(cpu_extension, '_STATE', {
        'loaded': None,
        'error': None,
        'warned': False
    })
    monkeypatch.setenv('X3D_PLUGIN_NO_EXT', '1')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert not cpu_extension.ensure_loaded()
    x = torch.randn(1, 8, 3, 5, 5)
    w = torch.randn(8, 1, 3, 3, 3)
    assert torch.equal(
        channelwise_conv3d(x, w, 1, 1), F.conv3d(x, w, None, 1, 1, 1, 8))


def test_trace_records_standard_conv(fast):
    m = ChannelwiseConv3d(8, 3, stride=(1, 2, 2), padding=1).eval()
    x = torch.randn(1, 8, 3, 6, 6)
    traced = torch.jit.trace(m, x)
    graph = str(traced.graph)
    assert 'aten::_convolution' in graph or 'aten::conv3d' in graph
    assert 'x3d_plugin::' not in graph and 'x3d_plugin_cpu' not in graph
    torch.testing.assert_close(traced(x), m(x), rtol=1e-4, atol=1e-4)


def test_torch_compile_fullgraph(fast):
    torch._dynamo.reset()
    m = nn.Sequential(
        ChannelwiseConv3d(8, 3, stride=(1, 2, 2), padding=1), nn.ReLU(),
        ChannelwiseConv3d(8, (5, 1, 1), padding=(2, 0, 0)))
    x = torch.randn(1, 8, 4, 6, 6, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True, backend='aot_eager')
    y = compiled(x)
    y.sum().backward()
    gx, gw = x.grad.clone(), m[0].weight.grad.clone()
    x.grad = None
    m.zero_grad()
    y0 = m(x)
    y0.sum().backward()
    torch.testing.assert_close(y, y0)
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, m[0].weight.grad)


@pytest.mark.slow
def test_torch_compile_inductor(fast):
    torch._dynamo.reset()
    m = nn.Sequential(
        ChannelwiseConv3d(8, 3, padding=1), nn.ReLU(),
        ChannelwiseConv3d(8, (5, 1, 1), padding=(2, 0, 0)))
    x = torch.randn(1, 8, 4, 6, 6, requires_grad=True)
    y = torch.compile(m, fullgraph=True)(x)
    y.sum().backward()
    torch.testing.assert_close(y, m(x))


def test_op_runs_for_a_backward_or_bf16_and_is_skipped_for_float_inference(
        avx2_choice):
    """Float inference of a 3x3x3 layer whose forward stays oneDNN's
    (stride 2 below 192 channels) gains nothing from the op (its float
    forward is F.conv3d there), bf16 inference does (the forward is ours),
    training always does (the backward is ours)."""
    m = ChannelwiseConv3d(54, 3, stride=(1, 2, 2), padding=1)
    x = torch.randn(2, 54, 4, 10, 10)

    def use(a, w):
        return cw_mod._use_op(a, w, m.stride)

    assert use(x, m.weight)  # training: the weight needs a gradient
    with torch.no_grad():
        assert not use(x, m.weight)
        assert use(x.bfloat16(), m.weight.bfloat16())
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert use(x, m.weight)
            y = m(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=CL)
    with torch.no_grad():
        y = m(x)
    torch.testing.assert_close(
        y, F.conv3d(x, m.weight, None, (1, 2, 2), 1, 1, 54))


def test_temporal_kernel_forward_is_ours_also_for_float_inference(
        avx2_choice):
    """The stem's 5x1x1 forward runs the C++ kernel (oneDNN's is 8-18x
    slower from 32x32 frames up), in training and inference alike."""
    m = ChannelwiseConv3d(24, (5, 1, 1), padding=(2, 0, 0))
    x = torch.randn(2, 24, 6, 33, 35)
    with torch.no_grad():
        assert cw_mod._use_op(x, m.weight, m.stride)
        y, calls = kernel_forward_calls(lambda: m(x))
    assert calls == [([1, 1, 1], [2, 0, 0])]
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(
        y, F.conv3d(x, m.weight, None, 1, (2, 0, 0), 1, 24),
        rtol=1e-5, atol=1e-5)
