"""The Triton kernels of the channelwise conv3d against ``F.conv3d``.

Without a GPU the kernels run under Triton's interpreter
(``TRITON_INTERPRET=1``) on CPU tensors: the variable is read when a
kernel is defined, so one child process imports the kernels with it set
and computes every case; the tests compare its results with ``F.conv3d``
here. The CUDA tests run the operator on a GPU and are skipped without
one. The GPU benchmark scripts are checked to start on any machine.
"""
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from x3d_plugin.ops import (ChannelwiseConv3d, channelwise_conv3d,
                            set_fast_channelwise, triton_channelwise_available,
                            triton_error, triton_probe)

ROOT = Path(__file__).resolve().parents[2]
CL = torch.channels_last_3d
HAS_TRITON = importlib.util.find_spec('triton') is not None
HAS_CUDA = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(
    not HAS_TRITON, reason='triton is not installed (pip install triton; '
    'see requirements/tests.txt)')
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA, reason='no CUDA device: the GPU tests run in a GPU '
    'session (tools/benchmark/gpu_tables.sh)')

# Every X3D kernel/stride/padding combination.
X3D_OPS = [
    ((3, 3, 3), (1, 1, 1), (1, 1, 1)),
    ((3, 3, 3), (1, 2, 2), (1, 1, 1)),
    ((5, 1, 1), (1, 1, 1), (2, 0, 0)),
]


def reference(x, w, stride, padding, g, dtype=torch.float64):
    """F.conv3d in ``dtype`` and its gradients for upstream gradient
    ``g``."""
    x = x.detach().to(dtype).requires_grad_()
    w = w.detach().to(dtype).requires_grad_()
    y = F.conv3d(x, w, None, stride, padding, 1, w.shape[0])
    gx, gw = torch.autograd.grad(y, (x, w), g.to(dtype))
    return y, gx, gw


def assert_matches(results, ref, rtol, atol):
    """Each result within ``rtol`` and ``atol`` x (its reference's largest
    magnitude, at least 1) of the float64 reference."""
    for name, a, b in zip(('out', 'grad_input', 'grad_weight'), results,
                          ref):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a.double(), b, rtol=rtol,
                                   atol=atol * scale,
                                   msg=lambda m: f'{name}: {m}')


# --------------------------------------------------------------------------
# (a) The kernels under Triton's interpreter, on CPU tensors
# --------------------------------------------------------------------------
def _slice_noncontiguous(gen):
    big = torch.randn(2, 30, 4, 7, 8, generator=gen)
    return big[:1, 3:21, 1:3, :5, 1:7]  # (1, 18, 2, 5, 6), no layout


def _interpreter_cases():
    """name -> (x, w, stride, padding, grad_weight ranges, tolerance)."""
    gen = torch.Generator().manual_seed(0)

    def rnd(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=gen).to(dtype)

    bf16, fp16, fp64 = torch.bfloat16, torch.float16, torch.float64
    # The interpreter's tile is 64 positions x 16 channels (a program
    # costs about 0.5 s there): channels 18, 20 and 24 fill a block and
    # part of another; over 64 positions (the input of 'k333_s122_odd',
    # 'k511_stem') take several tiles.
    return {
        'k333_s1_batch2': (rnd(2, 20, 2, 3, 5), rnd(20, 1, 3, 3, 3),
                           (1, 1, 1), (1, 1, 1), 3, 1e-5),
        'k333_s122_odd': (rnd(1, 13, 2, 7, 9), rnd(13, 1, 3, 3, 3),
                          (1, 2, 2), (1, 1, 1), 2, 1e-5),
        'k511_stem': (rnd(1, 24, 6, 3, 5), rnd(24, 1, 5, 1, 1), (1, 1, 1),
                      (2, 0, 0), 1, 1e-5),
        'k333_s1_noncontiguous': (_slice_noncontiguous(gen),
                                  rnd(18, 1, 3, 3, 3), (1, 1, 1),
                                  (1, 1, 1), 2, 1e-5),
        'general_geometry': (rnd(1, 5, 5, 4, 7), rnd(5, 1, 2, 3, 2),
                             (2, 1, 3), (1, 0, 1), 2, 1e-5),
        'k333_s122_bf16': (rnd(1, 16, 2, 6, 5, dtype=bf16),
                           rnd(16, 1, 3, 3, 3, dtype=bf16), (1, 2, 2),
                           (1, 1, 1), 2, 2e-2),
        'k511_fp16': (rnd(1, 8, 5, 2, 3, dtype=fp16),
                      rnd(8, 1, 5, 1, 1, dtype=fp16), (1, 1, 1), (2, 0, 0),
                      2, 5e-3),
        'k333_s122_fp64': (rnd(1, 4, 2, 3, 5, dtype=fp64),
                           rnd(4, 1, 3, 3, 3, dtype=fp64), (1, 2, 2),
                           (1, 1, 1), 2, 1e-10),
    }


CASES = _interpreter_cases()

# Run in a child with TRITON_INTERPRET=1: loads the cases, runs the three
# kernels (grad_weight twice, to compare the two results bit for bit) and
# backward() without grad_input, and saves the results.
CHILD = textwrap.dedent('''
    import sys
    import torch
    from x3d_plugin.ops import triton_channelwise as tc
    assert tc.interpreting()
    cases = torch.load(sys.argv[1])
    out = {}
    for name, (x, w, g, stride, padding, parts) in cases.items():
        y = tc.forward(x, w, stride, padding)
        gi = tc.grad_input(g, w, tuple(x.shape), stride, padding)
        gw = tc.grad_weight(g, x, tuple(w.shape), stride, padding,
                            num_parts=parts)
        gw2 = tc.grad_weight(g, x, tuple(w.shape), stride, padding,
                             num_parts=parts)
        only_w = tc.backward(g, x, w, stride, padding, False, True)
        out[name] = dict(y=y, gi=gi, gw=gw, gw_again=gw2,
                         channels_last=(y.is_contiguous(
                             memory_format=torch.channels_last_3d),
                             gi.is_contiguous(
                                 memory_format=torch.channels_last_3d)),
                         only_w=only_w)
    torch.save(out, sys.argv[2])
''')


@pytest.fixture(scope='module')
def interpreted(tmp_path_factory):
    """case name -> (the child's results, upstream gradient)."""
    if not HAS_TRITON:
        pytest.skip('triton is not installed (pip install triton; see '
                    'requirements/tests.txt)')
    tmp = tmp_path_factory.mktemp('triton_interpret')
    gen = torch.Generator().manual_seed(1)
    inputs, grads = {}, {}
    for name, (x, w, stride, padding, parts, _) in CASES.items():
        y = F.conv3d(x.double(), w.double(), None, stride, padding, 1,
                     w.shape[0])
        grads[name] = torch.randn(y.shape, generator=gen).to(x.dtype)
        inputs[name] = (x, w, grads[name], stride, padding, parts)
    torch.save(inputs, tmp / 'in.pt')
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run(
        [sys.executable, '-c', CHILD, str(tmp / 'in.pt'), str(tmp / 'out.pt')],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = torch.load(tmp / 'out.pt')
    return {name: (results[name], grads[name]) for name in CASES}


@needs_triton
@pytest.mark.parametrize('name', list(CASES))
def test_interpreted_kernels_match_conv3d(interpreted, name):
    x, w, stride, padding, _, tol = CASES[name]
    res, g = interpreted[name]
    ref = reference(x, w, stride, padding, g)
    assert res['y'].dtype == res['gi'].dtype == res['gw'].dtype == x.dtype
    assert res['channels_last'] == (True, True)
    assert_matches((res['y'], res['gi'], res['gw']), ref, rtol=tol,
                   atol=tol)


@needs_triton
@pytest.mark.parametrize('name', list(CASES))
def test_interpreted_grad_weight_is_deterministic(interpreted, name):
    """The partial sums are reduced without atomics: bit-identical runs."""
    res, _ = interpreted[name]
    assert torch.equal(res['gw'], res['gw_again'])


@needs_triton
def test_interpreted_backward_skips_unneeded_grad(interpreted):
    res, _ = interpreted['k333_s1_batch2']
    gi, gw = res['only_w']
    assert gi.numel() == 0
    # One position range here, three in res['gw']: another summation order.
    torch.testing.assert_close(gw, res['gw'], rtol=1e-5, atol=1e-5)


def _compile_for_hopper(kernel_name, dtype, geometry, config):
    """Compiles one kernel for sm_90 with Triton's own ptxas (no GPU
    needed), specialised as the JIT specialises channels-last tensors
    (channel stride 1, 16-byte aligned data) with 54 channels; returns
    the kernel's PTX."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from x3d_plugin.ops import triton_channelwise as tc
    fn = getattr(tc, f'_{kernel_name}_kernel')
    kernel, stride, padding = geometry
    const = dict(zip(('KT', 'KH', 'KW'), kernel))
    const.update(zip(('ST', 'SH', 'SW'), stride))
    const.update(zip(('PT', 'PH', 'PW'), padding))
    const.update(ALIGN=2, BIG=False, ACC64=dtype == 'fp64',
                 **config.kwargs)
    if kernel_name == 'grad_weight':
        const['KPAD'] = 32 if kernel == (3, 3, 3) else 8
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in const:
            signature[name] = 'constexpr'
        elif name.endswith('_ptr'):
            signature[name] = f'*{dtype}'
            if name == 'part_ptr':
                signature[name] = '*fp64' if dtype == 'fp64' else '*fp32'
            attrs[(i, )] = [['tt.divisibility', 16]]
        elif name in ('sxc', 'syc', 'sgc', 'sic'):
            signature[name] = 'constexpr'
            const[name] = 1
        else:
            signature[name] = 'i32'
    compiled = triton.compile(ASTSource(fn, signature, constexprs=const,
                                        attrs=attrs),
                              target=GPUTarget('cuda', 90, 32),
                              options=dict(num_warps=config.num_warps))
    return compiled.asm['ptx']


try:
    import triton
    from triton.backends import backends as _triton_backends
    HAS_PTXAS = 'nvidia' in _triton_backends
except Exception:  # triton missing or without its CUDA backend
    HAS_PTXAS = False


@pytest.mark.skipif(not HAS_PTXAS, reason='triton with its CUDA backend '
                    '(ptxas) is not installed')
@pytest.mark.parametrize('dtype', ['bf16', 'fp32'])
@pytest.mark.parametrize('kernel_name',
                         ['forward', 'grad_input', 'grad_weight'])
def test_kernels_compile_for_hopper(kernel_name, dtype, monkeypatch):
    """Triton's GPU code generation (which the interpreter skips) accepts
    every kernel at every X3D geometry with the first autotune config,
    and the channel rows load as vectors (C = 54: 2 elements)."""
    from x3d_plugin.ops import triton_channelwise as tc

    # The kernels write their fused multiply-adds (tl.fma); this only
    # silences Triton 3.9's notice about its fp-fusion default.
    monkeypatch.setenv('TRITON_DEFAULT_FP_FUSION', '1')
    configs = (tc._GW_CONFIGS
               if kernel_name == 'grad_weight' else tc._TILE_CONFIGS)
    for geometry in X3D_OPS:
        ptx = _compile_for_hopper(kernel_name, dtype, geometry, configs[0])
        assert '.visible .entry' in ptx
        loads = re.findall(r'ld\.global\S*', ptx)
        width = '.b32' if dtype == 'bf16' else '.v2.b32'
        assert loads and all(x.endswith(width) for x in loads), loads


# --------------------------------------------------------------------------
# Without triton / CUDA
# --------------------------------------------------------------------------
def test_package_imports_without_triton():
    """x3d_plugin imports and the CPU op runs when triton cannot import."""
    code = textwrap.dedent('''
        import sys
        sys.modules['triton'] = None  # import triton -> ImportError
        import torch
        import torch.nn.functional as F
        import x3d_plugin.models
        from x3d_plugin.ops import (ChannelwiseConv3d,
                                    triton_channelwise_available)
        m = ChannelwiseConv3d(8, 3, padding=1)
        x = torch.randn(1, 8, 3, 5, 5)
        ref = F.conv3d(x, m.weight, None, 1, 1, 1, 8)
        assert (m(x) - ref).abs().max() < 1e-4
        assert not triton_channelwise_available()
        assert 'triton' not in [k for k, v in sys.modules.items() if v]
        print('ok')
    ''')
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith('ok')


@pytest.mark.skipif(HAS_CUDA, reason='checks the CPU-only answer')
def test_unavailable_without_cuda_names_the_reason():
    assert not triton_channelwise_available()
    assert triton_error() == 'CUDA is not available'


def test_gpu_op_speed_lists_x3d_shapes(capsys):
    """The GPU benchmark starts without a GPU: --help, and the layer
    shapes it times (X3D-M at batch 16, X3D-L at batch 8)."""
    script = ROOT / 'tools' / 'benchmark' / 'gpu_op_speed.py'
    spec = importlib.util.spec_from_file_location('gpu_op_speed', script)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--help'])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert '--dtypes' in out and '--list-shapes' in out
    tool.main(['--list-shapes'])
    lines = capsys.readouterr().out.strip().splitlines()
    # Per arch: the stem's 5x1x1, then per stage a stride-2 and a stride-1
    # 3x3x3 (4 stages): 9 shapes each.
    assert len([s for s in lines if s.startswith('X3D-M')]) == 9
    assert len([s for s in lines if s.startswith('X3D-L')]) == 9
    assert 'X3D-M b16 | 16x24x16x112x112 k5x1x1' in lines
    assert 'X3D-M b16 | 16x54x16x112x112 k3x3x3 s1x2x2' in lines
    assert 'X3D-M b16 | 16x432x16x7x7 k3x3x3' in lines
    assert 'X3D-L b8 | 8x54x16x156x156 k3x3x3 s1x2x2' in lines
    # --rows: positions in that order; a position past the end is refused.
    tool.main(['--list-shapes', '--archs', 'l', '--rows', '9', '2'])
    assert capsys.readouterr().out.splitlines() == [
        'X3D-L b8 | 8x54x16x156x156 k3x3x3 s1x2x2',
        'X3D-L b8 | 8x432x16x10x10 k3x3x3']
    with pytest.raises(SystemExit) as exit_info:
        tool.main(['--list-shapes', '--archs', 'l', '--rows', '10'])
    assert exit_info.value.code == 2
    assert '--rows 10: there are 9 shapes' in capsys.readouterr().err


def test_gpu_tables_script_parses():
    script = ROOT / 'tools' / 'benchmark' / 'gpu_tables.sh'
    proc = subprocess.run(['bash', '-n', str(script)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_gpu_tables_runs_only_the_steps_named(tmp_path):
    """STEPS picks the steps of gpu_tables.sh (TOTAL_S=0: a step that is
    picked is skipped for want of time), with the installed stack."""
    env = dict(os.environ, STEPS='op_table', TOTAL_S='0',
               OUT=str(tmp_path / 'out'), WHEELS=str(tmp_path / 'none'),
               PYTHON=sys.executable)
    done = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'benchmark' / 'gpu_tables.sh')],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert [s for s in lines if s.endswith(': not in STEPS')] == [
        f'== {name}: not in STEPS' for name in ('cuda_tests', 'model_table',
                                                'cpu_op_tests', 'profile_m')
    ]
    skipped = [s for s in lines if ': skipped' in s]
    assert len(skipped) == 1 and skipped[0].startswith('== op_table: skipped')


# --------------------------------------------------------------------------
# (b) On a GPU
# --------------------------------------------------------------------------
def reprobe_triton(monkeypatch, setting=None):
    """Sets ``X3D_PLUGIN_TRITON`` to ``setting`` (None: unset, the
    default) and forgets the probe's answer and warning, so that the next
    call asks again; all of it is undone after the test."""
    if setting is None:
        monkeypatch.delenv('X3D_PLUGIN_TRITON', raising=False)
    else:
        monkeypatch.setenv('X3D_PLUGIN_TRITON', setting)
    for key, value in (('ok', None), ('error', None), ('warned', False)):
        monkeypatch.setitem(triton_probe._TRITON, key, value)


def test_reprobe_asks_again(monkeypatch):
    """What the GPU fixture does, here: the probe answers anew and, on a
    machine without CUDA, names CUDA whatever it answered before."""
    monkeypatch.setitem(triton_probe._TRITON, 'ok', False)
    monkeypatch.setitem(triton_probe._TRITON, 'error', 'an earlier answer')
    reprobe_triton(monkeypatch)
    assert 'X3D_PLUGIN_TRITON' not in os.environ
    assert triton_channelwise_available() == (HAS_CUDA and HAS_TRITON)
    if not HAS_CUDA:
        assert triton_error() == 'CUDA is not available'


def test_triton_is_the_cuda_default_and_its_fallback_warns(monkeypatch,
                                                           recwarn):
    """With CUDA (pretended here): the kernels load unless
    X3D_PLUGIN_TRITON=0; a Triton that does not import falls back to
    cuDNN with one warning naming the cause and both fixes."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    loads = []
    monkeypatch.setattr(triton_probe, 'triton_kernels',
                        lambda: loads.append(1))
    reprobe_triton(monkeypatch)
    assert triton_channelwise_available() and triton_error() is None
    assert loads == [1]

    reprobe_triton(monkeypatch, '0')
    assert not triton_channelwise_available()
    assert triton_error() == 'turned off by X3D_PLUGIN_TRITON=0'
    assert loads == [1] and len(recwarn) == 0

    def missing():
        raise ModuleNotFoundError("No module named 'triton'", name='triton')

    monkeypatch.setattr(triton_probe, 'triton_kernels', missing)
    reprobe_triton(monkeypatch)
    assert not triton_channelwise_available()
    assert triton_error().startswith("No module named 'triton'; fix: pip "
                                     'install triton')
    (warning, ) = recwarn.list
    message = str(warning.message)
    assert 'pip install triton' in message and 'cuDNN' in message
    assert 'X3D_PLUGIN_TRITON=0' in message
    triton_probe._TRITON['ok'] = None  # asks again; warned stays True
    assert not triton_channelwise_available()
    assert len(recwarn) == 1


@pytest.fixture
def triton_gpu(monkeypatch):
    if not HAS_CUDA:
        pytest.skip('no CUDA device')
    if not HAS_TRITON:
        pytest.skip('triton is not installed')
    reprobe_triton(monkeypatch)  # the default: on
    # cuDNN's float32 convolutions, the references here, in float32.
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    assert triton_channelwise_available(), triton_error()
    set_fast_channelwise(True)
    yield
    set_fast_channelwise(True)


# One tile for every kernel instead of autotuning: each shape then compiles
# 3 kernels, not 11 (about 1 s each on an H200), which keeps the grid of
# shapes below within the GPU check's minutes. The tuned tiles run in the
# full-size, determinism, autocast, switch and compile tests.
FIXED_TILE = dict(BLOCK_P=16, BLOCK_C=32, num_warps=4)


@pytest.fixture
def fixed_tile(triton_gpu, monkeypatch):
    tc = triton_probe.triton_kernels()
    tuned = tc._config

    def config(given, dtype):
        if given is None and dtype != torch.float64:
            return dict(FIXED_TILE)
        return tuned(given, dtype)

    monkeypatch.setattr(tc, '_config', config)


def op_with_grads(x, w, stride, padding, g):
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = torch.ops.x3d_plugin.channelwise_conv3d(x, w, stride, padding)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    return y, gx, gw


@needs_cuda
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-4),
                                       (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize('kernel,stride,padding', X3D_OPS)
@pytest.mark.parametrize('channels', [24, 54, 216, 432])
def test_cuda_x3d_shapes(fixed_tile, dtype, tol, kernel, stride, padding,
                         channels):
    x = torch.randn(2, channels, 8, 14, 14, device='cuda').to(dtype)
    x = x.contiguous(memory_format=CL)
    w = torch.randn(channels, 1, *kernel, device='cuda').to(dtype)
    g = torch.randn(_out(x, w, stride, padding), device='cuda').to(dtype)
    ref = reference(x, w, stride, padding, g)
    y, gx, gw = op_with_grads(x, w, stride, padding, g)
    assert y.dtype == gx.dtype == gw.dtype == dtype
    assert y.is_contiguous(memory_format=CL)
    assert_matches((y, gx, gw), ref, rtol=tol, atol=tol)


@needs_cuda
@pytest.mark.parametrize('channels', [54, 108])
def test_cuda_float16(fixed_tile, channels):
    x = torch.randn(2, channels, 6, 11, 13, device='cuda').half()
    w = torch.randn(channels, 1, 3, 3, 3, device='cuda').half()
    g = torch.randn(_out(x, w, (1, 2, 2), (1, 1, 1)), device='cuda').half()
    got = op_with_grads(x, w, (1, 2, 2), (1, 1, 1), g)
    assert got[0].dtype == got[2].dtype == torch.float16
    assert_matches(got, reference(x, w, (1, 2, 2), (1, 1, 1), g), 5e-3,
                   5e-3)


def _out(x, w, stride, padding):
    return [x.shape[0], x.shape[1]] + [
        (x.shape[2 + i] + 2 * padding[i] - w.shape[2 + i]) // stride[i] + 1
        for i in range(3)
    ]


@needs_cuda
def test_cuda_x3d_m_stage1_full_size(triton_gpu):
    """The largest X3D-M layer at a training clip (batch 2 of 16x112x112
    into the first stride-2 block), bf16."""
    x = torch.randn(2, 54, 16, 112, 112, device='cuda',
                    dtype=torch.bfloat16).contiguous(memory_format=CL)
    w = torch.randn(54, 1, 3, 3, 3, device='cuda', dtype=torch.bfloat16)
    g = torch.randn(2, 54, 16, 56, 56, device='cuda', dtype=torch.bfloat16)
    # A float32 reference (float64 convolutions are slow on GPU).
    ref = reference(x, w, (1, 2, 2), (1, 1, 1), g, torch.float32)
    got = op_with_grads(x, w, (1, 2, 2), (1, 1, 1), g)
    assert_matches(got, [r.double() for r in ref], rtol=2e-2, atol=2e-2)


@needs_cuda
def test_cuda_noncontiguous_and_ncdhw(fixed_tile):
    big = torch.randn(2, 60, 6, 9, 8, device='cuda')
    w = torch.randn(54, 1, 3, 3, 3, device='cuda')
    for x in (big[:, 3:57, 1:5, :8], big[:, :54].contiguous()):
        g = torch.randn(_out(x, w, (1, 2, 2), (1, 1, 1)), device='cuda')
        assert_matches(op_with_grads(x, w, (1, 2, 2), (1, 1, 1), g),
                       reference(x, w, (1, 2, 2), (1, 1, 1), g), 1e-4, 1e-4)


@needs_cuda
def test_cuda_bias_is_added_after_the_op(fixed_tile):
    """A channelwise conv with a bias (BN folded in) runs the Triton op
    (channels-last output) and adds the bias; gradients reach the bias."""
    m = ChannelwiseConv3d(54, 3, stride=(1, 2, 2), padding=1,
                          bias=True).cuda()
    x = torch.randn(2, 54, 4, 9, 9, device='cuda').contiguous(
        memory_format=CL).requires_grad_()
    y = m(x)
    assert y.is_contiguous(memory_format=CL)
    ref = reference(x, m.weight, m.stride, m.padding,
                    torch.ones_like(y))[0] + m.bias.double().view(
                        1, -1, 1, 1, 1)
    torch.testing.assert_close(y.double(), ref.detach(), rtol=1e-4,
                               atol=1e-4)
    y.sum().backward()
    torch.testing.assert_close(m.bias.grad,
                               torch.full_like(m.bias, y[0, 0].numel() * 2))


@needs_cuda
def test_cuda_grad_weight_deterministic(triton_gpu):
    x = torch.randn(4, 54, 8, 28, 28, device='cuda', dtype=torch.bfloat16)
    w = torch.randn(54, 1, 3, 3, 3, device='cuda', dtype=torch.bfloat16)
    g = torch.randn(4, 54, 8, 28, 28, device='cuda', dtype=torch.bfloat16)
    a = op_with_grads(x, w, (1, 1, 1), (1, 1, 1), g)[2]
    b = op_with_grads(x, w, (1, 1, 1), (1, 1, 1), g)[2]
    assert torch.equal(a, b)


@needs_cuda
@pytest.mark.parametrize('kernel,stride,padding', X3D_OPS)
def test_cuda_gradcheck_float64(triton_gpu, kernel, stride, padding):
    x = torch.randn(1, 9, 3, 5, 5, dtype=torch.float64, device='cuda',
                    requires_grad=True)
    w = torch.randn(9, 1, *kernel, dtype=torch.float64, device='cuda',
                    requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: torch.ops.x3d_plugin.channelwise_conv3d(
            a, b, stride, padding), (x, w))


@needs_cuda
def test_cuda_opcheck(triton_gpu):
    x = torch.randn(1, 9, 3, 5, 5, device='cuda', requires_grad=True)
    w = torch.randn(9, 1, 3, 3, 3, device='cuda', requires_grad=True)
    torch.library.opcheck(torch.ops.x3d_plugin.channelwise_conv3d.default,
                          (x, w, [1, 2, 2], [1, 1, 1]))
    g = torch.randn(1, 9, 3, 3, 3, device='cuda')
    torch.library.opcheck(
        torch.ops.x3d_plugin.channelwise_conv3d_backward.default,
        (g, x.detach(), w.detach(), [1, 2, 2], [1, 1, 1], True, True))


@needs_cuda
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_cuda_autocast_runs_in_autocast_dtype(triton_gpu, dtype):
    m = ChannelwiseConv3d(54, 3, stride=(1, 2, 2), padding=1).cuda()
    w0 = m.weight.detach().clone().requires_grad_()
    x = torch.randn(2, 54, 4, 9, 9, device='cuda')
    xr, x0 = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast('cuda', dtype=dtype):
        y = m(xr)
        y0 = F.conv3d(x0, w0, None, m.stride, m.padding, 1, 54)
    assert y.dtype == y0.dtype == dtype
    assert y.is_contiguous(memory_format=CL)  # the op ran
    torch.testing.assert_close(y.float(), y0.float(), rtol=2e-2,
                               atol=2e-2 * y0.abs().max().item())
    y.float().square().sum().backward()
    y0.float().square().sum().backward()
    assert xr.grad.dtype == m.weight.grad.dtype == torch.float32
    torch.testing.assert_close(m.weight.grad, w0.grad, rtol=3e-2,
                               atol=3e-2 * w0.grad.abs().max().item())
    torch.testing.assert_close(xr.grad, x0.grad, rtol=3e-2,
                               atol=3e-2 * x0.grad.abs().max().item())


@needs_cuda
def test_cuda_switch_selects_cudnn(triton_gpu):
    m = ChannelwiseConv3d(16, 3, stride=(1, 2, 2), padding=1).cuda()
    x = torch.randn(1, 16, 3, 7, 7, device='cuda')  # NCDHW
    set_fast_channelwise(False)
    y = m(x)
    assert y.is_contiguous()  # cuDNN keeps the input's layout
    y_fn = channelwise_conv3d(x, m.weight, (1, 2, 2), 1)
    assert y_fn.is_contiguous()
    torch.testing.assert_close(y_fn, y, rtol=1e-6, atol=1e-6)
    set_fast_channelwise(True)
    y_triton = m(x)
    assert y_triton.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y_triton, y, rtol=1e-4, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize('precision', [torch.float32, torch.bfloat16])
def test_cuda_x3d_backbone_triton_equals_cudnn(fixed_tile, precision):
    """X3D-S (train mode) on CUDA: the Triton path and cuDNN give the same
    features and the same gradient for every parameter (relative error of
    each tensor's norm; TF32 off so that float32 means float32)."""
    from x3d_plugin.models import X3D
    torch.manual_seed(0)
    model = X3D(arch='s').cuda().train()
    x = torch.randn(2, 3, 4, 64, 64, device='cuda')
    results = []
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for fast in (True, False):
            set_fast_channelwise(fast)
            model.zero_grad()
            with torch.autocast('cuda', dtype=precision,
                                enabled=precision != torch.float32):
                out = model(x)
            out.float().square().mean().backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            results.append((out.float(), grads))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
        set_fast_channelwise(True)
    (out_t, grads_t), (out_c, grads_c) = results
    tol = 1e-3 if precision == torch.float32 else 5e-2

    def rel(a, b):
        return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()

    assert rel(out_t, out_c) < tol
    assert grads_t.keys() == grads_c.keys()
    errors = {n: rel(grads_t[n], grads_c[n]) for n in grads_c}
    worst = max(errors, key=errors.get)
    assert errors[worst] < tol, (worst, errors[worst])


@needs_cuda
def test_cuda_torch_compile_inductor(triton_gpu):
    torch._dynamo.reset()
    m = nn.Sequential(
        ChannelwiseConv3d(24, 3, stride=(1, 2, 2), padding=1), nn.ReLU(),
        ChannelwiseConv3d(24, (5, 1, 1), padding=(2, 0, 0))).cuda()
    x = torch.randn(2, 24, 4, 10, 10, device='cuda', requires_grad=True)
    y = torch.compile(m, fullgraph=True)(x)
    y.square().sum().backward()
    gx, gw = x.grad.clone(), m[0].weight.grad.clone()
    x.grad = None
    m.zero_grad()
    y0 = m(x)
    y0.square().sum().backward()
    torch.testing.assert_close(y, y0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gx, x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, m[0].weight.grad, rtol=1e-4, atol=1e-3)
