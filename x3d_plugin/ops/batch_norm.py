"""Batch normalisation of channels-last activations on CPU with what
follows it in X3D fused in, and squeeze-and-excitation with its swish.

:func:`batch_norm_act` computes ``act(bn(x) + residual)`` (the residual
and the ReLU or SiLU optional) for an ``nn.BatchNorm3d`` ``bn``;
:func:`squeeze_excite_silu` computes ``silu(x * excite(mean(x)))``. On
CPU, for channels-last-3d float32 or bfloat16 activations, both run the
C++ kernels built with the channelwise convolution
(``csrc/batch_norm_cl.cpp``, see :mod:`x3d_plugin.ops.cpu_extension`):
PyTorch's channels-last BN forward and backward read and write the
tensors several times more than needed (their forward + backward of a
4x54x4x80x80 float32 tensor took about 30x the time of copying it on a
2-core AVX-512 Xeon; docs/benchmarks.md). :func:`batch_norm_act` is the
same computation as ``nn.BatchNorm3d``'s forward: batch statistics while
training (or without running statistics), the running ones in eval mode,
running statistics updated with the module's ``momentum`` (or the
cumulative average when it is None) and the unbiased variance,
``num_batches_tracked`` counted.

Everywhere else they call the modules and PyTorch's functions: other
devices, other memory formats or dtypes, BN subclasses (e.g.
``SyncBatchNorm``), modules that are not BN (a folded BN is an
``nn.Identity``), modules with hooks (which must run), scripting,
tracing, ONNX export and ``torch.compile``, a build that failed, and after
:func:`set_fast_batch_norm` ``(False)``.
"""
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from x3d_plugin.ops import cpu_extension

__all__ = [
    'batch_norm_act', 'squeeze_excite_silu', 'squeeze_excite_fusable',
    'has_hooks',
    'set_fast_batch_norm',
    'fast_batch_norm_enabled'
]

_ENABLED = [True]
_DTYPES = (torch.float32, torch.bfloat16)
_CL = torch.channels_last_3d


def set_fast_batch_norm(enabled: bool) -> bool:
    """Switches the C++ path of :func:`batch_norm_act` on or off; returns
    the previous setting. Off, it runs the module and ``F.relu``."""
    previous = _ENABLED[0]
    _ENABLED[0] = bool(enabled)
    return previous


def fast_batch_norm_enabled() -> bool:
    """Whether the C++ path is switched on (:func:`set_fast_batch_norm`)."""
    return _ENABLED[0]


def has_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` would run hooks (its own or global ones):
    a fused path that does not call it must then step aside, e.g. for
    precise BN, which reads each BN's input through a forward pre-hook."""
    g = nn.modules.module
    return bool(module._forward_hooks or module._forward_pre_hooks
                or module._backward_hooks
                or getattr(module, '_backward_pre_hooks', None)
                or g._global_forward_hooks or g._global_forward_pre_hooks
                or g._global_backward_hooks
                or getattr(g, '_global_backward_pre_hooks', None))


def _fast_ok(x: Tensor, bn: nn.Module, residual: Optional[Tensor]) -> bool:
    if not _ENABLED[0] or type(bn) is not nn.BatchNorm3d or not bn.affine:
        return False
    if has_hooks(bn):
        return False
    if (torch.jit.is_scripting() or torch.jit.is_tracing()
            or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling()):
        return False
    if (x.device.type != 'cpu' or x.dim() != 5 or x.dtype not in _DTYPES
            or bn.weight.dtype != torch.float32
            or not x.is_contiguous(memory_format=_CL)):
        return False
    if residual is not None and (
            residual.shape != x.shape or residual.dtype != x.dtype
            or residual.device != x.device
            or not residual.is_contiguous(memory_format=_CL)):
        return False
    if bn.training or bn.running_mean is None:
        if x.numel() // max(x.shape[1], 1) < 2:
            return False  # PyTorch's error: one value per channel
    return cpu_extension.fast_channelwise_available()


_ACTS = {None: 0, 'relu': 1, 'silu': 2}


def _act(out: Tensor, act: Optional[str], inplace: bool) -> Tensor:
    if act == 'relu':
        return F.relu(out, inplace=inplace)
    if act == 'silu':
        return F.silu(out)  # its backward needs its input
    return out


def batch_norm_act(x: Tensor,
                   bn: nn.Module,
                   act: Optional[str] = None,
                   residual: Optional[Tensor] = None) -> Tensor:
    """``act(bn(x) + residual)``, the residual and the activation optional.

    Args:
        x (Tensor): Input, ``N x C x T x H x W``.
        bn (nn.Module): The normalisation layer (any module; the fused
            C++ path takes an affine ``nn.BatchNorm3d``).
        act (str, optional): ``'relu'``, ``'silu'`` or None.
        residual (Tensor, optional): Added after the normalisation (not
            with ``'silu'``).

    Returns:
        Tensor: The result, channels-last-3d on the fused path.
    """
    if act not in _ACTS:
        raise ValueError(f'act={act!r}: use one of {list(_ACTS)}')
    if residual is not None and act == 'silu':
        raise ValueError("a residual is added only before 'relu' or no act")
    if not _fast_ok(x, bn, residual):
        out = bn(x)
        if residual is not None:
            out = out + residual if out is x else out.add_(residual)
        return _act(out, act, inplace=out is not x)
    batch_stats = bn.training or bn.running_mean is None
    update = bn.training and bn.track_running_stats
    momentum = 0.0
    if update:
        bn.num_batches_tracked.add_(1)
        momentum = (bn.momentum if bn.momentum is not None else 1.0 /
                    float(bn.num_batches_tracked))
    # Modules without running statistics pass empty ones (never read).
    running_mean = (bn.running_mean if bn.running_mean is not None else
                    bn.weight.new_empty(0))
    running_var = (bn.running_var if bn.running_var is not None else
                   bn.weight.new_empty(0))
    return _BatchNormAct.apply(x, residual, bn.weight, bn.bias, running_mean,
                               running_var, batch_stats, update,
                               float(momentum), float(bn.eps), _ACTS[act])


def squeeze_excite_fusable(x: Tensor) -> bool:
    """Whether :func:`squeeze_excite_silu` runs its fused kernels for
    ``x``."""
    return (_ENABLED[0] and x.device.type == 'cpu' and x.dim() == 5
            and x.dtype in _DTYPES and x.is_contiguous(memory_format=_CL)
            and not (torch.jit.is_scripting() or torch.jit.is_tracing()
                     or torch.onnx.is_in_onnx_export()
                     or torch.compiler.is_compiling())
            and cpu_extension.fast_channelwise_available())


def squeeze_excite_silu(x: Tensor, excite: Callable[[Tensor],
                                                    Tensor]) -> Tensor:
    """``silu(x * excite(x.mean((2, 3, 4), keepdim=True)))``:
    squeeze-and-excitation, then swish. ``excite`` maps the pooled
    ``N x C x 1 x 1 x 1`` tensor to the scale (SE's two 1x1x1 convolutions
    and sigmoid). On the fused path the gradient that reaches ``x`` through
    the pooling is added by the same kernel that computes the rest of
    ``x``'s gradient."""
    if not squeeze_excite_fusable(x):
        return F.silu(x * excite(x.mean(dim=(2, 3, 4), keepdim=True)))
    link = {}
    # Under CPU autocast the excitation (two matrix products of N x C
    # values) runs in float32 on a float32 mean: in bfloat16 autocast would
    # cast its four weights and their gradients at every call, which took
    # longer than the products. The float32 mean is summed as x is read
    # (_SEPool).
    in_float = x.dtype != torch.float32 and torch.is_autocast_enabled('cpu')
    pooled = _SEPool.apply(x, link, in_float)
    if in_float:
        with torch.autocast('cpu', enabled=False):
            scale = excite(pooled)
    else:
        scale = excite(pooled)
    if scale.dtype != x.dtype:
        scale = scale.to(x.dtype)
    return _SEScaleSilu.apply(x, scale.contiguous(), link)


class _BatchNormAct(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, residual, weight, bias, running_mean, running_var,
                batch_stats, update, momentum, eps, act):
        ops = cpu_extension.bn_kernels()
        with torch.no_grad():
            y, mean, invstd = ops.bn_forward(x, residual, weight, bias,
                                             running_mean, running_var,
                                             batch_stats, update, momentum,
                                             eps, act)
        ctx.batch_stats = batch_stats
        ctx.act = act
        ctx.has_residual = residual is not None
        # The backward recomputes the activation's input from x, except
        # after a residual addition, where ReLU's mask is read from y.
        keep_y = act == 1 and residual is not None
        ctx.save_for_backward(x, y if keep_y else None, weight, bias, mean,
                              invstd)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, y, weight, bias, mean, invstd = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=_CL)
        want_res = ctx.has_residual and ctx.needs_input_grad[1]
        gx, gw, gb, gres = cpu_extension.bn_kernels().bn_backward(
            grad_y, x, y, weight, bias, mean, invstd, ctx.batch_stats,
            ctx.act, want_res and ctx.act == 1)
        if want_res:
            gres = gres if ctx.act == 1 else grad_y
        else:
            gres = None
        return (gx if ctx.needs_input_grad[0] else None, gres,
                gw if ctx.needs_input_grad[2] else None,
                gb if ctx.needs_input_grad[3] else None, None, None, None,
                None, None, None, None)


class _SEScaleSilu(torch.autograd.Function):
    """``silu(x * scale)`` whose gradient for ``x`` is written by
    :class:`_SEPool`'s backward (which runs after this one: the scale is
    computed from the pooled ``x``), together with the pooling's."""

    @staticmethod
    def forward(ctx, x, scale, link):
        ctx.save_for_backward(x, scale)
        ctx.link = link
        return cpu_extension.bn_kernels().scale_silu_forward(x, scale)

    @staticmethod
    def backward(ctx, grad_y):
        x, scale = ctx.saved_tensors
        grad_y = grad_y.contiguous(memory_format=_CL)
        gs = cpu_extension.bn_kernels().scale_silu_grad_scale(
            grad_y, x, scale)
        if ctx.needs_input_grad[0]:
            ctx.link['grad_y'] = (grad_y, x, scale)
        return None, gs, None


class _SEPool(torch.autograd.Function):
    """SE's mean over T, H and W; its backward writes ``x``'s whole
    gradient: the pooling's plus the one :class:`_SEScaleSilu` left."""

    @staticmethod
    def forward(ctx, x, link, in_float):
        ctx.link = link
        ctx.shape = x.shape
        ctx.dtype = x.dtype
        if in_float:
            # Summed into float32 as x is read (PyTorch's sum with a
            # float32 dtype first copies all of bfloat16 x to float32).
            n, c, t, h, w = x.shape
            pooled = cpu_extension.bn_kernels().channel_sum(x)
            return pooled.div_(float(t * h * w)).view(n, c, 1, 1, 1)
        return x.mean(dim=(2, 3, 4), keepdim=True)

    @staticmethod
    def backward(ctx, grad_pooled):
        n, c, t, h, w = ctx.shape
        add = grad_pooled.float().reshape(n * c) / float(t * h * w)
        stash = ctx.link.pop('grad_y', None)
        if stash is None:  # no gradient came through the scaling
            grad = (grad_pooled / float(t * h * w)).to(ctx.dtype)
            return grad.expand(ctx.shape), None, None
        grad_y, x, scale = stash
        return cpu_extension.bn_kernels().scale_silu_grad_input(
            grad_y, x, scale, add), None, None
