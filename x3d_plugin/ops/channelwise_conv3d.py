"""Fast channelwise (depthwise) 3D convolution for CPU.

PyTorch's CPU backward of a grouped 3D convolution with ``groups ==
channels`` is 15-60x slower than its forward and dominates an X3D training
step on CPU. This module provides a C++ operator (``csrc/channelwise_conv3d
.cpp``) computing the forward, grad_input and grad_weight in channels-last
layout, vectorised over channels, and wraps it as

* ``torch.ops.x3d_plugin.channelwise_conv3d`` (a ``torch.library``
  custom op with autograd, a fake/meta implementation for
  ``torch.compile`` and CPU autocast to bfloat16),
* :func:`channelwise_conv3d`, the functional form (falls back to
  ``F.conv3d`` when the extension is unavailable),
* :class:`ChannelwiseConv3d`, a drop-in ``nn.Conv3d`` subclass.

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

Environment variables:

* ``X3D_PLUGIN_NO_EXT=1``: never build or load the extension (always
  ``F.conv3d``).
* ``X3D_PLUGIN_CACHE``: cache root for the compiled extension.
* ``X3D_PLUGIN_EXT_VERBOSE=1``: show the compiler's output.

At run time :func:`set_fast_channelwise` switches the fast path of
:class:`ChannelwiseConv3d` off and on (e.g. to compare with aten in one
process).
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
    'set_fast_channelwise', 'fast_channelwise_enabled', 'extension_error'
]

_SOURCE = Path(__file__).resolve().parent / 'csrc' / 'channelwise_conv3d.cpp'
_LOCK = threading.Lock()
_STATE = {'loaded': None, 'error': None, 'warned': False}
_ENABLED = [True]
_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
# Dtypes whose forward runs on F.conv3d inside the op (see _cw_conv3d_op).
_ATEN_FORWARD_DTYPES = (torch.float32, torch.float64)


def _compile_flags(flags: Sequence[str]) -> list:
    cflags = ['-O3', '-ffp-contract=fast', '-fno-math-errno', '-Wno-psabi']
    machine = platform.machine().lower()
    if machine in ('x86_64', 'amd64') and {'avx2', 'fma'} <= set(flags):
        cflags += ['-mavx2', '-mfma', '-mf16c']
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
    :func:`channelwise_conv3d` on or off at run time."""
    _ENABLED[0] = bool(enabled)


def fast_channelwise_enabled() -> bool:
    """Whether the fast path is switched on (see
    :func:`set_fast_channelwise`)."""
    return _ENABLED[0]


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
@torch.library.custom_op('x3d_plugin::channelwise_conv3d', mutates_args=())
def _cw_conv3d_op(x: torch.Tensor, weight: torch.Tensor,
                  stride: Sequence[int],
                  padding: Sequence[int]) -> torch.Tensor:
    if x.dtype in _ATEN_FORWARD_DTYPES and weight.dtype == x.dtype:
        # PyTorch's own channels-last forward (oneDNN) is about 2x faster
        # than ours in float32 (measured at every X3D layer shape of
        # tools/benchmark/op_speed.py); its backward is what is slow. In
        # bfloat16 ours is faster on CPUs without native bf16 arithmetic,
        # so it keeps the forward there.
        x = x.contiguous(memory_format=torch.channels_last_3d)
        out = F.conv3d(x, weight, None, stride, padding, 1, weight.shape[0])
        return out.contiguous(memory_format=torch.channels_last_3d)
    _require_extension()
    return torch.ops.x3d_plugin_cpu.forward(x, weight, list(stride),
                                            list(padding))


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
    _require_extension()
    return torch.ops.x3d_plugin_cpu.backward(grad_out, x, weight,
                                             list(stride), list(padding),
                                             need_input, need_weight)


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


def _use_op(x, weight) -> bool:
    """Whether the custom op runs: the fast path applies and the op does
    what PyTorch's ``F.conv3d`` would not, i.e. autograd will need the
    backward, or the convolution runs in bfloat16 (a bf16 input, or CPU
    autocast, which :func:`_fast_path_applies` allows only to bf16), where
    the op's forward is ours. A float forward without a backward is
    PyTorch's inside the op as well, so the op is skipped."""
    if not _fast_path_applies(x, weight):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return True
    return x.dtype == torch.bfloat16 or torch.is_autocast_enabled('cpu')


def channelwise_conv3d(x: torch.Tensor,
                       weight: torch.Tensor,
                       stride=1,
                       padding=0) -> torch.Tensor:
    """Channelwise 3D convolution: ``F.conv3d(x, weight, None, stride,
    padding, groups=C)`` with ``weight`` of shape (C, 1, kt, kh, kw).

    Uses the fast CPU operator when it applies (CPU tensor of dtype
    float32/float64/bfloat16, extension available, fast path enabled, not
    tracing/scripting/exporting, and a backward to come or a bf16
    convolution); the output is then channels-last-3d. Otherwise calls
    ``F.conv3d``.
    """
    stride, padding = _triple(stride), _triple(padding)
    if _use_op(x, weight) and (x.dtype == weight.dtype
                               or torch.is_autocast_enabled('cpu')):
        return _cw_conv3d_op(x, weight, stride, padding)
    return F.conv3d(x, weight, None, stride, padding, 1, weight.shape[0])


class ChannelwiseConv3d(nn.Conv3d):
    """Channelwise (depthwise) 3D convolution with a fast CPU backward.

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
    * autograd will need the backward, or the convolution runs in bfloat16
      (a bf16 input or CPU autocast); the float forward is PyTorch's own
      inside the op too, so float inference skips the op.

    Otherwise it runs ``nn.Conv3d.forward``. On the fast path the output is
    channels-last-3d (NTHWC in memory) whatever the input's layout.

    Args:
        channels (int): Number of input and output channels.
        kernel_size (int | tuple[int, int, int]): Kernel size (t, h, w).
        stride (int | tuple[int, int, int]): Stride. Defaults to 1.
        padding (int | tuple[int, int, int]): Zero padding. Defaults to 0.
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
                 bias: bool = False):
        super().__init__(
            channels,
            channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=channels,
            bias=bias)

    def _fast_ok(self, x) -> bool:
        return (self.bias is None and tuple(self.dilation) == (1, 1, 1)
                and self.padding_mode == 'zeros'
                and isinstance(self.padding, tuple)
                and self.groups == self.in_channels == self.out_channels
                and _use_op(x, self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast_ok(x):
            return _cw_conv3d_op(x, self.weight, self.stride, self.padding)
        return super().forward(x)
