"""The channelwise conv3d as an operator with autograd: forward and
backward on CPU (the C++ kernels of :mod:`x3d_plugin.ops.cpu_extension`,
or oneDNN's forward where :mod:`x3d_plugin.ops.forward_policy` says it is
faster) and on CUDA (the Triton kernels, else cuDNN).

Two ways in, same kernels:

* ``torch.ops.x3d_plugin.channelwise_conv3d``: a ``torch.library`` custom
  op with autograd (its backward is the custom op
  ``x3d_plugin::channelwise_conv3d_backward``), fake implementations for
  ``torch.compile`` and CPU autocast to bfloat16; what ``torch.compile``
  records (one op, no graph break);
* :class:`EagerCpuConv`, a plain ``autograd.Function`` for eager mode on
  CPU: a custom op call goes through more Python per forward+backward
  (0.1-0.5 ms on a 2-core AVX2 machine, a tenth of a small layer's step).

:func:`cpu_op` picks between them.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from x3d_plugin.ops import cpu_extension
from x3d_plugin.ops.forward_policy import ours_forward_faster
from x3d_plugin.ops.triton_probe import (triton_channelwise_available,
                                         triton_kernels)

__all__ = ['channelwise_conv3d_op', 'EagerCpuConv', 'cpu_op', 'out_shape']


def out_shape(x, weight, stride, padding) -> list:
    """(N, C, To, Ho, Wo) of the convolution."""
    n, c = x.shape[:2]
    out = [n, c]
    for i in range(3):
        out.append((x.shape[2 + i] + 2 * padding[i] - weight.shape[2 + i]) //
                   stride[i] + 1)
    return out


def cpu_forward(x, weight, stride, padding):
    """The op's CPU forward: ours, or PyTorch's channels-last one (oneDNN)
    where :func:`~x3d_plugin.ops.forward_policy.ours_forward_faster` does
    not hold for this CPU class (its backward is what is slow)."""
    if (weight.dtype == x.dtype
            and not ours_forward_faster(x, weight, stride)):
        x = x.contiguous(memory_format=torch.channels_last_3d)
        out = F.conv3d(x, weight, None, stride, padding, 1, weight.shape[0])
        return out.contiguous(memory_format=torch.channels_last_3d)
    return cpu_extension.kernels(x.shape[1], x.dtype).forward(
        x, weight, list(stride), list(padding))


def cpu_backward(grad_out, x, weight, stride, padding, need_input,
                 need_weight):
    """The op's CPU backward: (grad_input, grad_weight), an empty tensor
    for a gradient not asked for."""
    return cpu_extension.kernels(x.shape[1], x.dtype).backward(
        grad_out, x, weight, list(stride), list(padding), need_input,
        need_weight)


@torch.library.custom_op('x3d_plugin::channelwise_conv3d', mutates_args=())
def channelwise_conv3d_op(x: torch.Tensor, weight: torch.Tensor,
                          stride: Sequence[int],
                          padding: Sequence[int]) -> torch.Tensor:
    return cpu_forward(x, weight, stride, padding)


@channelwise_conv3d_op.register_kernel('cuda')
def _(x, weight, stride, padding):
    if weight.dtype == x.dtype and triton_channelwise_available():
        return triton_kernels().forward(x, weight, stride, padding)
    out = F.conv3d(x, weight, None, stride, padding, 1, weight.shape[0])
    return out.contiguous(memory_format=torch.channels_last_3d)


@channelwise_conv3d_op.register_fake
def _(x, weight, stride, padding):
    torch._check(x.dim() == 5 and weight.dim() == 5)
    return torch.empty(out_shape(x, weight, stride, padding),
                       dtype=x.dtype,
                       device=x.device,
                       memory_format=torch.channels_last_3d)


@torch.library.custom_op('x3d_plugin::channelwise_conv3d_backward',
                         mutates_args=())
def channelwise_conv3d_backward_op(
        grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
        stride: Sequence[int], padding: Sequence[int], need_input: bool,
        need_weight: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    return cpu_backward(grad_out, x, weight, stride, padding, need_input,
                        need_weight)


@channelwise_conv3d_backward_op.register_kernel('cuda')
def _(grad_out, x, weight, stride, padding, need_input, need_weight):
    if weight.dtype == x.dtype and triton_channelwise_available():
        return triton_kernels().backward(grad_out, x, weight, stride,
                                         padding, need_input, need_weight)
    gi, gw, _ = torch.ops.aten.convolution_backward(
        grad_out.to(x.dtype), x, weight, None, list(stride), list(padding),
        [1, 1, 1], False, [0, 0, 0], weight.shape[0],
        [need_input, need_weight, False])
    gi = (gi.contiguous(memory_format=torch.channels_last_3d)
          if need_input else x.new_empty(0))
    gw = gw.contiguous() if need_weight else weight.new_empty(0)
    return gi, gw


@channelwise_conv3d_backward_op.register_fake
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
    gi, gw = channelwise_conv3d_backward_op(grad_out, x, weight, ctx.stride,
                                            ctx.padding, need_input,
                                            need_weight)
    return (gi if need_input else None, gw if need_weight else None, None,
            None)


channelwise_conv3d_op.register_autograd(_backward,
                                        setup_context=_setup_context)
torch.library.register_autocast('x3d_plugin::channelwise_conv3d', 'cpu',
                                torch.bfloat16)


class EagerCpuConv(torch.autograd.Function):
    """The custom op's CPU computation for eager mode, as a plain
    ``autograd.Function`` (see the module's docstring)."""

    @staticmethod
    def forward(ctx, x, weight, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return cpu_forward(x, weight, stride, padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_input, need_weight = ctx.needs_input_grad[:2]
        if not (need_input or need_weight):
            return None, None, None, None
        gi, gw = cpu_backward(grad_out, x, weight, ctx.stride, ctx.padding,
                              need_input, need_weight)
        return (gi if need_input else None, gw if need_weight else None,
                None, None)


def _bf16(t):
    """What the op's registered CPU autocast does to a tensor argument."""
    if t.is_floating_point() and t.dtype != torch.float64:
        return t.to(torch.bfloat16)
    return t


def cpu_op(x, weight, stride, padding):
    """The CPU convolution through the custom op (under ``torch.compile``)
    or its eager twin :class:`EagerCpuConv` (same kernels, same autocast to
    bfloat16)."""
    if torch.compiler.is_compiling():
        return channelwise_conv3d_op(x, weight, stride, padding)
    if torch.is_autocast_enabled('cpu'):
        x, weight = _bf16(x), _bf16(weight)
        with torch.autocast('cpu', enabled=False):
            return EagerCpuConv.apply(x, weight, stride, padding)
    return EagerCpuConv.apply(x, weight, stride, padding)
