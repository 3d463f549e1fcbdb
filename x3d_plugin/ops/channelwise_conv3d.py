"""Fast channelwise (depthwise) 3D convolution for CPU and GPU.

PyTorch's CPU backward of a grouped 3D convolution with ``groups ==
channels`` is 15-60x slower than its forward and dominates an X3D training
step on CPU. This package computes the forward, grad_input and grad_weight
with its own C++ kernels in channels-last layout, vectorised over
channels, and Triton kernels on GPU. This module holds what a model uses:

* :func:`channelwise_conv3d`, the functional form (falls back to
  ``F.conv3d`` when the fast path does not apply),
* :class:`ChannelwiseConv3d`, a drop-in ``nn.Conv3d`` subclass,
* :func:`set_fast_channelwise`, the run-time switch.

The parts, one module each:

* :mod:`x3d_plugin.ops.cpu_extension`: building, caching and loading the
  C++ kernels, one build per CPU class (AVX-512 with bf16, AVX-512, AVX2,
  generic); ``X3D_PLUGIN_NO_EXT``, ``X3D_PLUGIN_CACHE``,
  ``X3D_PLUGIN_EXT_VERBOSE``, ``X3D_PLUGIN_CPU_ISA``;
* :mod:`x3d_plugin.ops.forward_policy`: which forward (ours or oneDNN's)
  runs at which shape, as data measured per CPU class
  (``forward_policy.json``; ``X3D_PLUGIN_CW_POLICY``);
* :mod:`x3d_plugin.ops.channelwise_autograd`: the custom op
  ``torch.ops.x3d_plugin.channelwise_conv3d`` (autograd, fake
  implementation for ``torch.compile``, CPU autocast to bfloat16, CUDA
  kernels) and its eager twin;
* :mod:`x3d_plugin.ops.triton_probe`: whether the Triton kernels
  (:mod:`x3d_plugin.ops.triton_channelwise`) can run; they are the CUDA
  path by default (``X3D_PLUGIN_TRITON=0`` turns them off), timed on an
  H200 by ``tools/benchmark/gpu_tables.sh``. Under
  ``torch.autocast('cuda')`` the op runs in the autocast dtype, as
  ``F.conv3d`` would.

At run time :func:`set_fast_channelwise` switches the fast path of
:class:`ChannelwiseConv3d` off and on, on CPU and GPU alike (off: aten on
CPU, cuDNN on GPU; e.g. to compare them in one process).
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from x3d_plugin.ops.channelwise_autograd import (EagerCpuConv,
                                                 channelwise_conv3d_op,
                                                 cpu_op)
from x3d_plugin.ops.cpu_extension import (extension_error,
                                          fast_channelwise_available)
from x3d_plugin.ops.forward_policy import ours_forward_faster
from x3d_plugin.ops.triton_probe import (_TRITON,
                                         triton_channelwise_available,
                                         triton_error)

__all__ = [
    'ChannelwiseConv3d', 'channelwise_conv3d', 'fast_channelwise_available',
    'set_fast_channelwise', 'fast_channelwise_enabled', 'extension_error',
    'triton_channelwise_available', 'triton_error'
]

_ENABLED = [True]
_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_CUDA_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Dtypes that torch.autocast('cuda') casts (float64 is left as it is).
_AUTOCAST_CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# The names the tests and tools reach through this module.
_EagerCpuConv = EagerCpuConv
_cw_conv3d_op = channelwise_conv3d_op
_cpu_op = cpu_op


def set_fast_channelwise(enabled: bool) -> None:
    """Switches the fast path of :class:`ChannelwiseConv3d` and
    :func:`channelwise_conv3d` on or off at run time, on CPU (the C++
    kernel) and GPU (the Triton kernels) alike; off, both run
    ``F.conv3d`` (aten's CPU kernels, cuDNN).

    Args:
        enabled (bool): Whether the fast path runs where it applies.
    """
    _ENABLED[0] = bool(enabled)


def fast_channelwise_enabled() -> bool:
    """Whether the fast path is switched on (see
    :func:`set_fast_channelwise`)."""
    return _ENABLED[0]


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


def _use_op(x, weight, stride) -> bool:
    """Whether the custom op runs: the fast path applies and the op does
    what PyTorch's ``F.conv3d`` would not, i.e. autograd will need the
    backward, or the forward is ours at this shape, dtype (bfloat16 under
    CPU autocast, which :func:`_fast_path_applies` allows only to bf16) and
    CPU class (:func:`~x3d_plugin.ops.forward_policy.ours_forward_faster`).
    Any other forward without a backward is PyTorch's inside the op as
    well, so the op is skipped."""
    if not _fast_path_applies(x, weight):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return True
    return ours_forward_faster(x, weight, stride)


def channelwise_conv3d(x: torch.Tensor,
                       weight: torch.Tensor,
                       stride=1,
                       padding=0) -> torch.Tensor:
    """Channelwise 3D convolution: ``F.conv3d(x, weight, None, stride,
    padding, groups=C)`` with ``weight`` of shape (C, 1, kt, kh, kw).

    Uses the fast CPU operator when it applies (CPU tensor of dtype
    float32/float64/bfloat16, extension available, fast path enabled, not
    tracing/scripting/exporting, and a backward to come or a forward that
    is ours at this shape, see :mod:`x3d_plugin.ops.forward_policy`), and the Triton kernels for a CUDA tensor (float32,
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
    * dilation is 1 and ``padding_mode`` is ``'zeros'`` (a bias is added
      after the op),
    * the extension is available and the fast path is switched on
      (:func:`set_fast_channelwise`),
    * the module is not being traced, scripted or exported to ONNX (those
      record a standard ``conv3d``),
    * autograd will need the backward, or the forward is ours at this
      shape and dtype on this CPU class (:mod:`x3d_plugin.ops.
      forward_policy`; e.g. on AVX2 the stem's kt x 1 x 1 kernel, every
      bfloat16 forward, and float32 3x3x3 kernels at stride 1 on frames at
      least 6 wide or at stride 2 with 192 channels or more on frames at
      least 7 wide); any other forward is PyTorch's own inside the op
      too, so inference skips the op there.

    On a CUDA input (float32, float64, float16 or bfloat16; under
    ``torch.autocast('cuda')`` in the autocast dtype) it runs the op's
    Triton kernels, forward and backward, when Triton is available
    (:func:`triton_channelwise_available`), under the same conditions on
    dilation, padding mode, the switch and tracing, and without a bias.

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
        bias (bool): Whether to add a learnable bias (on the fast paths,
            CPU and CUDA, added after the op). Defaults to False.

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

    def _op_geometry(self, with_bias: bool = False) -> bool:
        """Whether the op computes this module's convolution (with
        ``with_bias``: all of it but the bias, which is then added after
        it)."""
        return ((with_bias or self.bias is None)
                and tuple(self.dilation) == (1, 1, 1)
                and self.padding_mode == 'zeros'
                and isinstance(self.padding, tuple)
                and self.groups == self.in_channels == self.out_channels)

    def _fast_ok(self, x) -> bool:
        return (self._op_geometry(with_bias=True)
                and _use_op(x, self.weight, self.stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == 'cuda' and self._op_geometry(with_bias=True):
            cuda_inputs = _cuda_inputs(x, self.weight)
            if cuda_inputs is not None:
                return self._add_bias(
                    _cw_conv3d_op(*cuda_inputs, self.stride, self.padding))
        if self._fast_ok(x):
            return self._add_bias(
                _cpu_op(x, self.weight, self.stride, self.padding))
        return super().forward(x)

    def _add_bias(self, out: torch.Tensor) -> torch.Tensor:
        """``out`` plus the bias, if any. A bias (BN folded in by
        fuse_conv_bn) is one more pass; the convolutions it replaces cost
        far more: oneDNN's kt x 1 x 1 stem kernel (99 ms against 1.7 ms for
        X3D-M's stem at batch 1 on CPU), cuDNN's channels-last kernels on
        CUDA (docs/benchmarks.md)."""
        if self.bias is None:
            return out
        return out + self.bias.to(out.dtype).view(1, -1, 1, 1, 1)
