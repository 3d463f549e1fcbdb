"""Fast channelwise (depthwise) 3D convolution for CPU and GPU.

PyTorch's CPU backward of a grouped 3D convolution with ``groups ==
channels`` is 15-60x slower than its forward and dominates an X3D training
step on CPU. This module provides a C++ operator (``csrc/channelwise_conv3d
.cpp``) computing the forward, grad_input and grad_weight in channels-last
layout, vectorised over channels, and wraps it as

* ``torch.ops.x3d_plugin.channelwise_conv3d`` (a ``torch.library``
  custom op with autograd, a fake/meta implementation for
  ``torch.compile`` and CPU autocast to bfloat16; its CUDA implementation
  runs the Triton kernels of :mod:`x3d_plugin.ops.triton_channelwise`),
* :func:`channelwise_conv3d`, the functional form (falls back to
  ``F.conv3d`` when the extension is unavailable),
* :class:`ChannelwiseConv3d`, a drop-in ``nn.Conv3d`` subclass.

On CPU the last two call the kernels through the custom op under
``torch.compile`` and through an ``autograd.Function`` in eager mode (the
same kernels and CPU autocast, less Python per call).

Build: the extension is compiled with ``torch.utils.cpp_extension.load``
(needs a C++ compiler and ``ninja``) on first use and cached on disk. The
cache root is ``$X3D_PLUGIN_CACHE`` if set, else ``$TORCH_EXTENSIONS_DIR``,
else ``~/.cache/x3d_plugin/extensions``; the build directory's name holds a
hash of the source, the compiler flags, the torch and Python versions and
the CPU model and flags, so a cache is never reused by another CPU or
torch. Concurrent first uses (e.g. the ranks of a distributed job) share
the build through cpp_extension's file lock. Later processes load the
cached library directly (milliseconds).

If the build fails (no compiler, no ninja, compile error) one
``UserWarning`` names the cause and the fix, and everything falls back to
``F.conv3d``.

GPU: on CUDA tensors the same op runs Triton kernels (forward, grad_input,
grad_weight over channels-last-3d tiles; see
:mod:`x3d_plugin.ops.triton_channelwise`) for float32, float16, bfloat16
and float64, forward and backward, in training and inference. Triton is
optional: it is imported when the first CUDA tensor reaches the op, and
without it (or without CUDA) the GPU path is cuDNN's ``F.conv3d``. Under
``torch.autocast('cuda')`` the op runs in the autocast dtype, as
``F.conv3d`` would.

Environment variables:

* ``X3D_PLUGIN_NO_EXT=1``: never build or load the extension (always
  ``F.conv3d``).
* ``X3D_PLUGIN_CACHE``: cache root for the compiled extension.
* ``X3D_PLUGIN_EXT_VERBOSE=1``: show the compiler's output.
* ``X3D_PLUGIN_TRITON=1``: use the Triton kernels on CUDA. They are off by
  default: they are tested under Triton's CPU interpreter and compiled for
  sm_90 here, but no GPU has run or timed them yet
  (``tools/benchmark/gpu_tables.sh`` does both); the GPU path is otherwise
  cuDNN's ``F.conv3d``.

At run time :func:`set_fast_channelwise` switches the fast path of
:class:`ChannelwiseConv3d` off and on, on CPU and GPU alike (off: aten on
CPU, cuDNN on GPU; e.g. to compare them in one process).
"""
import hashlib
import os
import platform
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from x3d_plugin.utils.cpu import cpu_info

__all__ = [
    'ChannelwiseConv3d', 'channelwise_conv3d', 'fast_channelwise_available',
    'set_fast_channelwise', 'fast_channelwise_enabled', 'extension_error',
    'triton_channelwise_available', 'triton_error'
]

_SOURCE = Path(__file__).resolve().parent / 'csrc' / 'channelwise_conv3d.cpp'
_LOCK = threading.Lock()
_STATE = {'loaded': None, 'error': None, 'warned': False}
_ENABLED = [True]
_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
# Dtypes whose forward runs on F.conv3d inside the op (see _cw_conv3d_op).
_ATEN_FORWARD_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Dtypes that torch.autocast('cuda') casts (float64 is left as it is).
_AUTOCAST_CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_TRITON_LOCK = threading.Lock()
_TRITON = {'ok': None, 'error': None, 'warned': False}


def _compile_flags(flags: Sequence[str]) -> list:
    # -fno-tree-loop-distribute-patterns: GCC otherwise turns the zeroing of
    # the accumulator arrays into a memset (`rep stos`) on the stack.
    cflags = ['-O3', '-ffp-contract=fast', '-fno-math-errno', '-Wno-psabi',
              '-fno-tree-loop-distribute-patterns']
    machine = platform.machine().lower()
    if machine in ('x86_64', 'amd64') and {'avx2', 'fma'} <= set(flags):
        cflags += ['-mavx2', '-mfma', '-mf16c']
    if torch._C.has_openmp and platform.system() == 'Linux':
        # at::parallel_for is an OpenMP pragma compiled into the extension:
        # without -fopenmp it runs on one thread. The extension then uses
        # the libgomp.so.1 that torch has already loaded (same soname), so
        # there is one thread pool.
        cflags.append('-fopenmp')
    return cflags


def cache_root() -> Path:
    """Directory under which compiled extensions are cached."""
    for var in ('X3D_PLUGIN_CACHE', 'TORCH_EXTENSIONS_DIR'):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    return Path.home() / '.cache' / 'x3d_plugin' / 'extensions'


def _build_spec():
    model, flags = cpu_info()
    cflags = _compile_flags(flags)
    h = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), repr(cflags).encode(),
                 torch.__version__.encode(),
                 str(getattr(torch.version, 'git_version', '')).encode(),
                 sys.version.split()[0].encode(), platform.machine().encode(),
                 model.encode(), ' '.join(flags).encode()):
        h.update(part)
        h.update(b'\0')
    name = 'x3d_cwconv3d_' + h.hexdigest()[:16]
    return name, cflags, cache_root() / name


def _load_extension():
    """Builds (or loads the cached) extension; raises on failure."""
    name, cflags, build_dir = _build_spec()
    so = build_dir / f'{name}.so'
    marker = build_dir / 'built.ok'
    if marker.is_file() and so.is_file():
        torch.ops.load_library(str(so))
        return str(so)
    build_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils import cpp_extension
    if not cpp_extension.is_ninja_available():
        raise RuntimeError(
            'ninja is not installed (torch.utils.cpp_extension needs it); '
            'fix: pip install ninja')
    verbose = os.environ.get('X3D_PLUGIN_EXT_VERBOSE', '') == '1'
    cpp_extension.load(
        name=name,
        sources=[str(_SOURCE)],
        extra_cflags=cflags,
        extra_ldflags=['-fopenmp'] if '-fopenmp' in cflags else [],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=verbose)
    tmp = build_dir / f'built.ok.{os.getpid()}'
    tmp.write_text(f'{so}\n')
    os.replace(tmp, marker)
    return str(so)


def _fix_hint(message: str) -> str:
    low = message.lower()
    if 'ninja' in low:
        return 'install ninja (pip install ninja)'
    if any(s in low for s in ('no such file or directory: \'c++\'',
                              'command \'c++\'', 'g++', 'compiler',
                              'not found')):
        return ('install a C++ compiler (e.g. apt-get install g++) and '
                'ninja (pip install ninja)')
    return ('check the compiler output (rerun with X3D_PLUGIN_EXT_VERBOSE=1)'
            ' or set X3D_PLUGIN_NO_EXT=1 to silence this')


def _ensure_loaded() -> bool:
    if _STATE['loaded'] is not None:
        return _STATE['loaded']
    with _LOCK:
        if _STATE['loaded'] is not None:
            return _STATE['loaded']
        if os.environ.get('X3D_PLUGIN_NO_EXT', '') not in ('', '0'):
            _STATE['error'] = 'disabled by X3D_PLUGIN_NO_EXT'
            _STATE['loaded'] = False
            return False
        try:
            _load_extension()
            _STATE['loaded'] = True
        except Exception as exc:  # never crash: fall back to F.conv3d
            message = str(exc).strip()
            if len(message) > 1500:
                message = '...' + message[-1500:]
            _STATE['error'] = f'{type(exc).__name__}: {message}'
            _STATE['loaded'] = False
            if not _STATE['warned']:
                _STATE['warned'] = True
                warnings.warn(
                    'x3d_plugin: the fast channelwise conv3d CPU extension '
                    f'could not be built ({_STATE["error"]}); falling back '
                    f'to F.conv3d (slow backward). Fix: {_fix_hint(message)}.',
                    UserWarning,
                    stacklevel=3)
        return _STATE['loaded']


def _require_extension() -> None:
    if not _ensure_loaded():
        raise RuntimeError('x3d_plugin: channelwise conv3d extension is '
                           f'unavailable: {extension_error()}')


@torch.compiler.assume_constant_result
def fast_channelwise_available() -> bool:
    """Whether the C++ extension is (or can be) built and loaded.

    The first call builds or loads it; a failure warns once and returns
    False.
    """
    return _ensure_loaded()


def extension_error() -> Optional[str]:
    """Why the extension is unavailable (None if it loaded or was not
    tried yet)."""
    return _STATE['error']


def set_fast_channelwise(enabled: bool) -> None:
    """Switches the fast path of :class:`ChannelwiseConv3d` and
    :func:`channelwise_conv3d` on or off at run time, on CPU (the C++
    kernel) and GPU (the Triton kernels) alike; off, both run
    ``F.conv3d`` (aten's CPU kernels, cuDNN)."""
    _ENABLED[0] = bool(enabled)


def fast_channelwise_enabled() -> bool:
    """Whether the fast path is switched on (see
    :func:`set_fast_channelwise`)."""
    return _ENABLED[0]


def _triton_kernels():
    """The Triton module (imports triton; call only once it is known to
    import, see :func:`triton_channelwise_available`)."""
    from x3d_plugin.ops import triton_channelwise
    return triton_channelwise


@torch.compiler.assume_constant_result
def triton_channelwise_available() -> bool:
    """Whether the GPU path can run the Triton kernels: CUDA is available,
    ``X3D_PLUGIN_TRITON=1`` is set and ``triton`` imports.

    The first call imports triton. Triton not installed is a normal setup
    (the GPU path is then cuDNN's) and is silent; any other import failure
    warns once.
    """
    if _TRITON['ok'] is not None:
        return _TRITON['ok']
    with _TRITON_LOCK:
        if _TRITON['ok'] is not None:
            return _TRITON['ok']
        if not torch.cuda.is_available():
            _TRITON['error'] = 'CUDA is not available'
        elif os.environ.get('X3D_PLUGIN_TRITON', '') in ('', '0'):
            _TRITON['error'] = ('off by default until timed on a GPU; set '
                                'X3D_PLUGIN_TRITON=1 to use it')
        else:
            try:
                _triton_kernels()
            except ModuleNotFoundError as exc:
                _TRITON['error'] = (f'{exc}; fix: pip install triton (or '
                                    'the version your torch was built with)')
            except Exception as exc:  # never crash: fall back to cuDNN
                _TRITON['error'] = f'{type(exc).__name__}: {exc}'
                if not _TRITON['warned']:
                    _TRITON['warned'] = True
                    warnings.warn(
                        'x3d_plugin: the Triton channelwise conv3d kernels '
                        f'could not be loaded ({_TRITON["error"]}); the GPU '
                        'path falls back to cuDNN. Fix: reinstall triton '
                        'or unset X3D_PLUGIN_TRITON to silence this.',
                        UserWarning,
                        stacklevel=3)
        _TRITON['ok'] = _TRITON['error'] is None
        return _TRITON['ok']


def triton_error() -> Optional[str]:
    """Why the Triton kernels are unavailable (None if they loaded or were
    not tried yet)."""
    return _TRITON['error']


def _out_shape(x, weight, stride, padding):
    n, c = x.shape[:2]
    out = [n, c]
    for i in range(3):
        out.append((x.shape[2 + i] + 2 * padding[i] - weight.shape[2 + i]) //
                   stride[i] + 1)
    return out


# --------------------------------------------------------------------------
# torch.library custom ops
# --------------------------------------------------------------------------
def _ours_forward_faster(x, weight, stride) -> bool:
    """Whether our C++ forward beats PyTorch's (oneDNN's) channels-last
    one for a float32 3x3x3 kernel: at stride 1 on frames at least 6 wide,
    at stride 2 from 192 channels on frames at least 7 wide (1.1-1.5x at
    X3D's layer shapes, measured side by side in ``docs/benchmarks.md``).
    The stride-2 layers of 54 and 108 channels (0.85-1.1x) and frames of
    2-5 (0.85-0.95x) keep oneDNN's."""
    if not (x.dtype == torch.float32 and weight.dtype == torch.float32
            and tuple(weight.shape[2:]) == (3, 3, 3)):
        return False
    if tuple(stride[1:]) == (1, 1):
        return x.shape[-1] >= 6
    return weight.shape[0] >= 192 and x.shape[-1] >= 7


def _cpu_forward(x, weight, stride, padding):
    """The op's CPU forward."""
    if (x.dtype in _ATEN_FORWARD_DTYPES and weight.dtype == x.dtype
            and not _temporal_only(weight)
            and not _ours_forward_faster(x, weight, stride)):
        # PyTorch's own channels-last forward (oneDNN) of a 3x3x3 kernel is
        # faster than ours at some shapes (_ours_forward_faster); its
        # backward is what is slow. Ours runs the forward elsewhere, of the
        # stem's 5x1x1 kernel (oneDNN's took 8-18x ours from 32x32 frames
        # up, one thread, AVX2) and of bfloat16 (faster on CPUs without
        # native bf16 arithmetic).
        x = x.contiguous(memory_format=torch.channels_last_3d)
        out = F.conv3d(x, weight, None, stride, padding, 1, weight.shape[0])
        return out.contiguous(memory_format=torch.channels_last_3d)
    _require_extension()
    return torch.ops.x3d_plugin_cpu.forward(x, weight, list(stride),
                                            list(padding))


def _cpu_backward(grad_out, x, weight, stride, padding, need_input,
                  need_weight):
    """The op's CPU backward: (grad_input, grad_weight), an empty tensor
    for a gradient not asked for."""
    _require_extension()
    return torch.ops.x3d_plugin_cpu.backward(grad_out, x, weight,
                                             list(stride), list(padding),
                                             need_input, need_weight)


@torch.library.custom_op('x3d_plugin::channelwise_conv3d', mutates_args=())
def _cw_conv3d_op(x: torch.Tensor, weight: torch.Tensor,
                  stride: Sequence[int],
                  padding: Sequence[int]) -> torch.Tensor:
    return _cpu_forward(x, weight, stride, padding)


@_cw_conv3d_op.register_kernel('cuda')
def _(x, weight, stride, padding):
    if weight.dtype == x.dtype and triton_channelwise_available():
        return _triton_kernels().forward(x, weight, stride, padding)
    out = F.conv3d(x, weight, None, stride, padding, 1, weight.shape[0])
    return out.contiguous(memory_format=torch.channels_last_3d)


@_cw_conv3d_op.register_fake
def _(x, weight, stride, padding):
    torch._check(x.dim() == 5 and weight.dim() == 5)
    return torch.empty(_out_shape(x, weight, stride, padding),
                       dtype=x.dtype,
                       device=x.device,
                       memory_format=torch.channels_last_3d)


@torch.library.custom_op('x3d_plugin::channelwise_conv3d_backward',
                         mutates_args=())
def _cw_conv3d_backward_op(
        grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
        stride: Sequence[int], padding: Sequence[int], need_input: bool,
        need_weight: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    return _cpu_backward(grad_out, x, weight, stride, padding, need_input,
                         need_weight)


@_cw_conv3d_backward_op.register_kernel('cuda')
def _(grad_out, x, weight, stride, padding, need_input, need_weight):
    if weight.dtype == x.dtype and triton_channelwise_available():
        return _triton_kernels().backward(grad_out, x, weight, stride,
                                          padding, need_input, need_weight)
    gi, gw, _ = torch.ops.aten.convolution_backward(
        grad_out.to(x.dtype), x, weight, None, list(stride), list(padding),
        [1, 1, 1], False, [0, 0, 0], weight.shape[0],
        [need_input, need_weight, False])
    gi = (gi.contiguous(memory_format=torch.channels_last_3d)
          if need_input else x.new_empty(0))
    gw = gw.contiguous() if need_weight else weight.new_empty(0)
    return gi, gw


@_cw_conv3d_backward_op.register_fake
def _(grad_out, x, weight, stride, padding, need_input, need_weight):
    gi = (torch.empty(x.shape, dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last_3d)
          if need_input else x.new_empty(0))
    gw = (weight.new_empty(weight.shape) if need_weight else
          weight.new_empty(0))
    return gi, gw


def _setup_context(ctx, inputs, output):
    x, weight, stride, padding = inputs
    ctx.save_for_backward(x, weight)
    ctx.stride = tuple(stride)
    ctx.padding = tuple(padding)


def _backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    need_input, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (need_input or need_weight):
        return None, None, None, None
    gi, gw = _cw_conv3d_backward_op(grad_out, x, weight, ctx.stride,
                                    ctx.padding, need_input, need_weight)
    return (gi if need_input else None, gw if need_weight else None, None,
            None)


_cw_conv3d_op.register_autograd(_backward, setup_context=_setup_context)
torch.library.register_autocast('x3d_plugin::channelwise_conv3d', 'cpu',
                                torch.bfloat16)


class _EagerCpuConv(torch.autograd.Function):
    """The custom op's CPU computation for eager mode, as a plain
    ``autograd.Function``: a custom op call goes through more Python per
    forward+backward (0.1-0.5 ms more on the 2-core AVX2 machine of
    ``docs/benchmarks.md``, a tenth of a small layer's step). Under
    ``torch.compile`` the custom op runs instead (one op in the graph)."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return _cpu_forward(x, weight, stride, padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_input, need_weight = ctx.needs_input_grad[:2]
        if not (need_input or need_weight):
            return None, None, None, None
        gi, gw = _cpu_backward(grad_out, x, weight, ctx.stride, ctx.padding,
                               need_input, need_weight)
        return (gi if need_input else None, gw if need_weight else None,
                None, None)


def _bf16(t):
    """What the op's registered CPU autocast does to a tensor argument."""
    if t.is_floating_point() and t.dtype != torch.float64:
        return t.to(torch.bfloat16)
    return t


def _cpu_op(x, weight, stride, padding):
    """The CPU convolution through the custom op (under ``torch.compile``)
    or its eager twin :class:`_EagerCpuConv` (same kernels, same autocast
    to bfloat16)."""
    if torch.compiler.is_compiling():
        return _cw_conv3d_op(x, weight, stride, padding)
    if torch.is_autocast_enabled('cpu'):
        x, weight = _bf16(x), _bf16(weight)
        with torch.autocast('cpu', enabled=False):
            return _EagerCpuConv.apply(x, weight, stride, padding)
    return _EagerCpuConv.apply(x, weight, stride, padding)


def _triple(v) -> Tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    v = tuple(int(i) for i in v)
    if len(v) == 1:
        return v * 3
    if len(v) != 3:
        raise ValueError(f'expected 1 or 3 values, got {v}')
    return v


def _autocast_ok() -> bool:
    """The op's autocast casts to bfloat16: only use it under CPU autocast
    when that is the autocast dtype."""
    if not torch.is_autocast_enabled('cpu'):
        return True
    return torch.get_autocast_dtype('cpu') == torch.bfloat16


def _fast_path_applies(x, weight) -> bool:
    if not _ENABLED[0]:
        return False
    if (torch.jit.is_scripting() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export()):
        return False
    return (x.device.type == 'cpu' and x.dim() == 5
            and x.dtype in _DTYPES and weight.dtype in _DTYPES
            and _autocast_ok() and fast_channelwise_available())


def _cuda_inputs(x, weight):
    """``(x, weight)`` as the op receives them on CUDA, cast to the
    autocast dtype under ``torch.autocast('cuda')`` (what ``F.conv3d``
    does), or None when the CUDA fast path does not apply (then
    ``F.conv3d``, i.e. cuDNN, runs)."""
    if not _ENABLED[0] or x.device.type != 'cuda':
        return None
    if (torch.jit.is_scripting() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export()):
        return None
    if (x.dim() != 5 or weight.device != x.device
            or x.dtype not in _CUDA_DTYPES
            or weight.dtype not in _CUDA_DTYPES):
        return None
    if torch.is_autocast_enabled('cuda'):
        dtype = torch.get_autocast_dtype('cuda')
        if x.dtype in _AUTOCAST_CUDA_DTYPES:
            x = x.to(dtype)
        if weight.dtype in _AUTOCAST_CUDA_DTYPES:
            weight = weight.to(dtype)
    if x.dtype != weight.dtype or not triton_channelwise_available():
        return None
    return x, weight


def _temporal_only(weight) -> bool:
    """A kt x 1 x 1 kernel (X3D's stem), whose forward is ours."""
    return weight.shape[3] == 1 and weight.shape[4] == 1


def _use_op(x, weight, stride) -> bool:
    """Whether the custom op runs: the fast path applies and the op does
    what PyTorch's ``F.conv3d`` would not, i.e. autograd will need the
    backward, or the forward is ours: bfloat16 (a bf16 input, or CPU
    autocast, which :func:`_fast_path_applies` allows only to bf16), a
    kt x 1 x 1 kernel or a float32 3x3x3 one where
    :func:`_ours_forward_faster` holds. Any other float forward without a
    backward is PyTorch's inside the op as well, so the op is skipped."""
    if not _fast_path_applies(x, weight):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return True
    return (x.dtype == torch.bfloat16 or torch.is_autocast_enabled('cpu')
            or _temporal_only(weight)
            or _ours_forward_faster(x, weight, stride))


def channelwise_conv3d(x: torch.Tensor,
                       weight: torch.Tensor,
                       stride=1,
                       padding=0) -> torch.Tensor:
    """Channelwise 3D convolution: ``F.conv3d(x, weight, None, stride,
    padding, groups=C)`` with ``weight`` of shape (C, 1, kt, kh, kw).

    Uses the fast CPU operator when it applies (CPU tensor of dtype
    float32/float64/bfloat16, extension available, fast path enabled, not
    tracing/scripting/exporting, and a backward to come or a bf16
    convolution), and the Triton kernels for a CUDA tensor (float32,
    float64, float16 or bfloat16, or any under ``torch.autocast('cuda')``,
    Triton available, fast path enabled, not tracing/scripting/exporting);
    the output is then channels-last-3d. Otherwise calls ``F.conv3d``.
    """
    stride, padding = _triple(stride), _triple(padding)
    cuda_inputs = _cuda_inputs(x, weight)
    if cuda_inputs is not None:
        return _cw_conv3d_op(*cuda_inputs, stride, padding)
    if _use_op(x, weight, stride) and (x.dtype == weight.dtype
                               or torch.is_autocast_enabled('cpu')):
        return _cpu_op(x, weight, stride, padding)
    return F.conv3d(x, weight, None, stride, padding, 1, weight.shape[0])


class ChannelwiseConv3d(nn.Conv3d):
    """Channelwise (depthwise) 3D convolution with a fast CPU backward and
    Triton kernels on GPU.

    Exactly ``nn.Conv3d(channels, channels, kernel_size, stride, padding,
    groups=channels, bias=bias)``: same parameters, state_dict keys and
    initialisation, and ``isinstance(m, nn.Conv3d)`` holds. Its forward
    uses the C++ operator of :mod:`x3d_plugin.ops` (forward, grad_input and
    grad_weight vectorised over channels in channels-last layout) when

    * the input is on the CPU with dtype float32, float64 or bfloat16 (or
      CPU autocast to bfloat16 is on),
    * there is no bias, dilation is 1 and ``padding_mode`` is ``'zeros'``,
    * the extension is available and the fast path is switched on
      (:func:`set_fast_channelwise`),
    * the module is not being traced, scripted or exported to ONNX (those
      record a standard ``conv3d``),
    * autograd will need the backward, or the forward is ours: bfloat16
      (a bf16 input or CPU autocast), the stem's kt x 1 x 1 kernel, or a
      float32 3x3x3 kernel at stride 1 on frames at least 6 wide or at
      stride 2 with 192 channels or more on frames at least 7 wide; any
      other float forward is PyTorch's own inside the op too, so float
      inference skips the op there.

    On a CUDA input (float32, float64, float16 or bfloat16; under
    ``torch.autocast('cuda')`` in the autocast dtype) it runs the op's
    Triton kernels, forward and backward, when Triton is available
    (:func:`triton_channelwise_available`), under the same conditions on
    bias, dilation, padding mode, the switch and tracing.

    Otherwise it runs ``nn.Conv3d.forward`` (cuDNN on GPU). On the fast
    path the output is channels-last-3d (NTHWC in memory) whatever the
    input's layout.

    Args:
        channels (int): Number of input and output channels.
        kernel_size (int | tuple[int, int, int]): Kernel size (t, h, w).
        stride (int | tuple[int, int, int]): Stride. Defaults to 1.
        padding (int | tuple[int, int, int]): Zero padding. Defaults to 0.
        dilation (int | tuple[int, int, int]): Dilation; other than 1 it
            runs ``nn.Conv3d.forward``. Defaults to 1.
        bias (bool): Whether to add a learnable bias (disables the fast
            path). Defaults to False.

    Example:
        >>> conv = ChannelwiseConv3d(54, 3, stride=(1, 2, 2), padding=1)
        >>> y = conv(torch.randn(2, 54, 4, 16, 16))
        >>> y.shape
        torch.Size([2, 54, 4, 8, 8])
    """

    def __init__(self,
                 channels: int,
                 kernel_size,
                 stride=1,
                 padding=0,
                 dilation=1,
                 bias: bool = False):
        super().__init__(
            channels,
            channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=channels,
            bias=bias)

    def _op_geometry(self) -> bool:
        """Whether the op computes this module's convolution."""
        return (self.bias is None and tuple(self.dilation) == (1, 1, 1)
                and self.padding_mode == 'zeros'
                and isinstance(self.padding, tuple)
                and self.groups == self.in_channels == self.out_channels)

    def _fast_ok(self, x) -> bool:
        return self._op_geometry() and _use_op(x, self.weight, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == 'cuda' and self._op_geometry():
            cuda_inputs = _cuda_inputs(x, self.weight)
            if cuda_inputs is not None:
                return _cw_conv3d_op(*cuda_inputs, self.stride,
                                     self.padding)
        if self._fast_ok(x):
            return _cpu_op(x, self.weight, self.stride, self.padding)
        return super().forward(x)
