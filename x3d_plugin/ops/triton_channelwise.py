"""Triton kernels for the channelwise (depthwise) 3D convolution on GPU.

The three kernels compute ``F.conv3d(x, w, None, stride, padding,
groups=C)``, its grad_input and its grad_weight for ``x`` of shape
(N, C, T, H, W) and ``w`` of shape (C, 1, kt, kh, kw). They take any
strides but are laid out for channels-last-3d tensors (N, T, H, W, C in
memory): a program owns a block of ``BLOCK_C`` consecutive channels and
``BLOCK_P`` consecutive positions of the flattened (n, t, h, w) grid, so
every load and store of a row of channels is contiguous. Accumulation is
in float32 (float64 for float64 tensors), with explicit fused
multiply-adds (not left to Triton's fp-fusion default); inputs may be
float32, float16, bfloat16 or float64.

* forward: one program per tile of output positions; kernel size, stride
  and padding are compile-time constants, the spatial taps are unrolled
  and the temporal ones a loop (all 27 unrolled, the compiler issues
  every load first and spills registers).
* grad_input: one program per tile of input positions, gathering from
  grad_output the taps whose strided output position exists (no atomics).
* grad_weight: the output positions are split into ``num_parts`` ranges;
  a program sums ``grad_output * x`` over its range for every tap at once
  (a [taps, positions, channels] tile) and writes one partial row per tap;
  the partial rows are summed by ``torch.sum`` afterwards. There are no
  atomics, so the result is deterministic (bit-identical between runs).

Triton is imported when this module is imported; the package imports this
module only when a CUDA tensor reaches the operator (see
:mod:`x3d_plugin.ops.channelwise_conv3d`). Under ``TRITON_INTERPRET=1``
(set before this module is first imported) the kernels run on CPU
tensors through Triton's numpy interpreter, with a fixed tile size instead
of autotuning; the tests use that where no GPU exists.
"""
import os
from typing import Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl

__all__ = ['forward', 'backward', 'grad_input', 'grad_weight', 'interpreting']

CL = torch.channels_last_3d
# Tile used under the interpreter (no autotuning there).
INTERPRETER_CONFIG = dict(BLOCK_P=64, BLOCK_C=16)
_INT32_MAX = 2**31 - 1


def interpreting() -> bool:
    """Whether Triton runs its CPU interpreter (``TRITON_INTERPRET=1``)."""
    knobs = getattr(triton, 'knobs', None)
    if knobs is not None and hasattr(knobs, 'runtime'):
        return bool(knobs.runtime.interpret)
    return os.environ.get('TRITON_INTERPRET', '') == '1'


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------
@triton.jit
def _split(m, D1, D2, D3):
    """Flat index over (D0, D1, D2, D3) -> its four coordinates."""
    i3 = m % D3
    r = m // D3
    i2 = r % D2
    r = r // D2
    return r // D1, r % D1, i2, i3


@triton.jit
def _unscale(sn, st, sh, sw, ALIGN: tl.constexpr, BIG: tl.constexpr):
    """Position strides passed divided by ``ALIGN`` -> the strides (int64
    when offsets may pass int32)."""
    if BIG:
        sn, st, sh, sw = (sn.to(tl.int64), st.to(tl.int64), sh.to(tl.int64),
                          sw.to(tl.int64))
    return sn * ALIGN, st * ALIGN, sh * ALIGN, sw * ALIGN


@triton.jit
def _forward_kernel(x_ptr, w_ptr, y_ptr, CA, T, H, W, To, Ho, Wo, M,
                    M_LOG2, sxn, sxc, sxt, sxh, sxw, syn, syc, syt, syh, syw,
                    KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                    ST: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                    PT: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                    ALIGN: tl.constexpr, BIG: tl.constexpr,
                    ACC64: tl.constexpr, BLOCK_P: tl.constexpr,
                    BLOCK_C: tl.constexpr):
    """y[n, c, to, ho, wo] = sum_taps x[n, c, to*ST-PT+a, ...] w[a, b, d, c]
    with ``w`` transposed to (taps, C)."""
    # C and the position strides arrive divided by ALIGN, so the compiler
    # knows they are multiples of it and vectorises the channel rows.
    C = CA * ALIGN
    sxn, sxt, sxh, sxw = _unscale(sxn, sxt, sxh, sxw, ALIGN, BIG)
    syn, syt, syh, syw = _unscale(syn, syt, syh, syw, ALIGN, BIG)
    acc_t = tl.float64 if ACC64 else tl.float32
    m = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    m_ok = m < M
    c_ok = c < C
    if BIG:
        m = m.to(tl.int64)
    n, to, ho, wo = _split(m, To, Ho, Wo)
    # The window's corner; a tap (a, b, d) adds a*sxt + b*sxh + d*sxw.
    t0 = to * ST - PT
    h0 = ho * SH - PH
    w0 = wo * SW - PW
    corner = x_ptr + (n * sxn + t0 * sxt + h0 * sxh + w0 * sxw)[:, None] \
        + (c * sxc)[None, :]
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=acc_t)
    # A loop over the temporal taps, the others unrolled: with all 27 taps
    # unrolled the compiler issues every load first and spills.
    for a in range(KT):
        ok_t = m_ok & (t0 >= -a) & (t0 < T - a)
        for b in tl.static_range(KH):
            ok_th = ok_t & (h0 >= -b) & (h0 < H - b)
            for d in tl.static_range(KW):
                ok = ok_th & (w0 >= -d) & (w0 < W - d)
                xv = tl.load(corner + (a * sxt + b * sxh + d * sxw),
                             mask=ok[:, None] & c_ok[None, :], other=0.0)
                wv = tl.load(w_ptr + ((a * KH + b) * KW + d) * C + c,
                             mask=c_ok, other=0.0)
                acc = tl.fma(xv.to(acc_t), wv.to(acc_t)[None, :], acc)
    y_off = n * syn + to * syt + ho * syh + wo * syw
    tl.store(y_ptr + y_off[:, None] + (c * syc)[None, :],
             acc.to(y_ptr.dtype.element_ty),
             mask=m_ok[:, None] & c_ok[None, :])


@triton.jit
def _tap_source(ip, k, S: tl.constexpr, Lo, stride):
    """Along one dimension, for input positions ``ip`` (padded: position +
    padding) and tap ``k``: which have an output position ``(ip - k) / S``,
    and that position's offset (times ``stride``) from ``ip * stride`` when
    ``S == 1`` (a scalar), else from 0 (a vector)."""
    if S == 1:
        ok = (ip >= k) & (ip < Lo + k)
        off = -k * stride
    else:
        o = (ip - k) // S
        ok = (ip >= k) & ((ip - k) % S == 0) & (o < Lo)
        off = o * stride
    return ok, off


@triton.jit
def _grad_input_kernel(g_ptr, w_ptr, gi_ptr, CA, T, H, W, To, Ho, Wo, M,
                       M_LOG2, sgn, sgc, sgt, sgh, sgw, sin, sic, sit, sih,
                       siw,
                       KT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                       ST: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                       PT: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                       ALIGN: tl.constexpr, BIG: tl.constexpr,
                       ACC64: tl.constexpr, BLOCK_P: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """gi[n, c, t, h, w] = sum over taps (a, b, d) with an output position
    (to, ho, wo) = ((t+PT-a)/ST, ...) of g[n, c, to, ho, wo] w[a, b, d, c];
    ``M`` counts input positions."""
    # C and the position strides arrive divided by ALIGN, so the compiler
    # knows they are multiples of it and vectorises the channel rows.
    C = CA * ALIGN
    sgn, sgt, sgh, sgw = _unscale(sgn, sgt, sgh, sgw, ALIGN, BIG)
    sin, sit, sih, siw = _unscale(sin, sit, sih, siw, ALIGN, BIG)
    acc_t = tl.float64 if ACC64 else tl.float32
    m = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    m_ok = m < M
    c_ok = c < C
    if BIG:
        m = m.to(tl.int64)
    n, t, h, w = _split(m, T, H, W)
    tp = t + PT
    hp = h + PH
    wp = w + PW
    # Along a stride-1 dimension the source moves by a scalar per tap.
    base = n * sgn
    if ST == 1:
        base += tp * sgt
    if SH == 1:
        base += hp * sgh
    if SW == 1:
        base += wp * sgw
    corner = g_ptr + base[:, None] + (c * sgc)[None, :]
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=acc_t)
    # A loop over the temporal taps, the others unrolled: with all 27 taps
    # unrolled the compiler issues every load first and spills.
    for a in range(KT):
        ok_t, off_t = _tap_source(tp, a, ST, To, sgt)
        ok_t = ok_t & m_ok
        for b in tl.static_range(KH):
            ok_h, off_h = _tap_source(hp, b, SH, Ho, sgh)
            ok_th = ok_t & ok_h
            for d in tl.static_range(KW):
                ok_w, off_w = _tap_source(wp, d, SW, Wo, sgw)
                ok = ok_th & ok_w
                off = off_t + off_h + off_w
                if (ST == 1) and (SH == 1) and (SW == 1):
                    ptrs = corner + off
                else:
                    ptrs = corner + off[:, None]
                gv = tl.load(ptrs, mask=ok[:, None] & c_ok[None, :],
                             other=0.0)
                wv = tl.load(w_ptr + ((a * KH + b) * KW + d) * C + c,
                             mask=c_ok, other=0.0)
                acc = tl.fma(gv.to(acc_t), wv.to(acc_t)[None, :], acc)
    i_off = n * sin + t * sit + h * sih + w * siw
    tl.store(gi_ptr + i_off[:, None] + (c * sic)[None, :],
             acc.to(gi_ptr.dtype.element_ty),
             mask=m_ok[:, None] & c_ok[None, :])


@triton.jit
def _grad_weight_kernel(g_ptr, x_ptr, part_ptr, CA, T, H, W, To, Ho, Wo,
                        M, M_LOG2, per_part, sgn, sgc, sgt, sgh, sgw, sxn,
                        sxc, sxt, sxh, sxw,
                        KT: tl.constexpr, KH: tl.constexpr,
                        KW: tl.constexpr, ST: tl.constexpr,
                        SH: tl.constexpr, SW: tl.constexpr,
                        PT: tl.constexpr, PH: tl.constexpr,
                        PW: tl.constexpr, KPAD: tl.constexpr,
                        ALIGN: tl.constexpr, BIG: tl.constexpr,
                        ACC64: tl.constexpr, BLOCK_P: tl.constexpr,
                        BLOCK_C: tl.constexpr):
    """part[p, k, c] = sum over the output positions of range ``p`` of
    g[n, c, to, ho, wo] x[n, c, to*ST-PT+a, ho*SH-PH+b, wo*SW-PW+d] with
    tap ``k = (a*KH + b)*KW + d``; ``M`` counts output positions."""
    # C and the position strides arrive divided by ALIGN, so the compiler
    # knows they are multiples of it and vectorises the channel rows.
    C = CA * ALIGN
    sgn, sgt, sgh, sgw = _unscale(sgn, sgt, sgh, sgw, ALIGN, BIG)
    sxn, sxt, sxh, sxw = _unscale(sxn, sxt, sxh, sxw, ALIGN, BIG)
    acc_t = tl.float64 if ACC64 else tl.float32
    part = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    k = tl.arange(0, KPAD)
    k_ok = k < KT * KH * KW
    ka = (k // (KH * KW))[:, None]
    kb = ((k // KW) % KH)[:, None]
    kd = (k % KW)[:, None]
    x_c = (c * sxc)[None, None, :]
    g_c = (c * sgc)[None, :]
    begin = part * per_part
    end = tl.minimum(begin + per_part, M)
    acc = tl.zeros((KPAD, BLOCK_P, BLOCK_C), dtype=acc_t)
    for start in range(begin, end, BLOCK_P):
        m = start + tl.arange(0, BLOCK_P)
        m_ok = m < end
        if BIG:
            m = m.to(tl.int64)
        n, to, ho, wo = _split(m, To, Ho, Wo)
        g_off = n * sgn + to * sgt + ho * sgh + wo * sgw
        gv = tl.load(g_ptr + g_off[:, None] + g_c,
                     mask=m_ok[:, None] & c_ok[None, :], other=0.0)
        ti = (to * ST - PT)[None, :] + ka
        hi = (ho * SH - PH)[None, :] + kb
        wi = (wo * SW - PW)[None, :] + kd
        ok = (k_ok[:, None] & m_ok[None, :] & (ti >= 0) & (ti < T)
              & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W))
        off = (n * sxn)[None, :] + ti * sxt + hi * sxh + wi * sxw
        xv = tl.load(x_ptr + off[:, :, None] + x_c,
                     mask=ok[:, :, None] & c_ok[None, None, :], other=0.0)
        acc = tl.fma(xv.to(acc_t), gv.to(acc_t)[None, :, :], acc)
    total = tl.sum(acc, axis=1)
    base = part_ptr + part.to(tl.int64) * (KT * KH * KW) * C
    tl.store(base + k[:, None] * C + c[None, :], total,
             mask=k_ok[:, None] & c_ok[None, :])


# Tiles for H100/H200-class GPUs: 8-16 elements per thread, channel rows
# of 32-64. Compiled for sm_90 (ptxas, no GPU needed) they use 94-154
# registers in bf16 at 3x3x3 with no spills; larger tiles spill. Few
# configs: each is compiled per kernel geometry and dtype on a fresh
# machine (about 1 s each).
_TILE_CONFIGS = [
    triton.Config(dict(BLOCK_P=32, BLOCK_C=32), num_warps=4),
    triton.Config(dict(BLOCK_P=64, BLOCK_C=32), num_warps=4),
    triton.Config(dict(BLOCK_P=64, BLOCK_C=64), num_warps=8),
    triton.Config(dict(BLOCK_P=128, BLOCK_C=32), num_warps=8),
]
# grad_weight holds a [taps, BLOCK_P, BLOCK_C] accumulator (taps padded to
# a power of two: 32 for 3x3x3): small position tiles (about 160
# registers, no spills).
_GW_CONFIGS = [
    triton.Config(dict(BLOCK_P=8, BLOCK_C=32), num_warps=4),
    triton.Config(dict(BLOCK_P=16, BLOCK_C=32), num_warps=8),
    triton.Config(dict(BLOCK_P=8, BLOCK_C=64), num_warps=8),
]
# Tuned once per channel count, geometry, dtype and power of two of the
# number of positions (``M_LOG2``, which the kernels do not read).
_KEY = ['CA', 'ALIGN', 'M_LOG2', 'KT', 'KH', 'KW', 'ST', 'SH', 'SW']
_TUNED = {}
# float64 (gradient checks) runs one tile instead of being tuned.
_FLOAT64_CONFIG = dict(BLOCK_P=32, BLOCK_C=16, num_warps=4)


def _bench(fn, quantiles=None, **kwargs):
    """Autotuning's timer: a short warm-up and 25 ms of runs per config
    (Triton's default is 25 + 100 ms), so that tuning every X3D layer
    shape stays within seconds."""
    return triton.testing.do_bench(fn, warmup=5, rep=25,
                                   quantiles=quantiles)


def _kernel(name, raw, configs, fixed: bool):
    """The autotuned kernel on GPU; the raw one under the interpreter or
    for a ``fixed`` tile."""
    if fixed or interpreting():
        return raw
    if name not in _TUNED:
        _TUNED[name] = triton.autotune(configs=configs, key=_KEY,
                                       do_bench=_bench)(raw)
    return _TUNED[name]


# --------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------
def _check(x: torch.Tensor, weight: torch.Tensor, stride, padding):
    if x.dim() != 5 or weight.dim() != 5 or weight.shape[1] != 1 or \
            weight.shape[0] != x.shape[1]:
        raise ValueError(
            'channelwise conv3d expects x of shape (N, C, T, H, W) and '
            'weight of shape (C, 1, kt, kh, kw); got x '
            f'{tuple(x.shape)} and weight {tuple(weight.shape)}')
    if len(stride) != 3 or len(padding) != 3:
        raise ValueError('stride and padding must have 3 values each; got '
                         f'{tuple(stride)} and {tuple(padding)}')


def _geometry(x, weight, stride, padding):
    kt, kh, kw = weight.shape[2:]
    out = [(x.shape[2 + i] + 2 * padding[i] - weight.shape[2 + i]) //
           stride[i] + 1 for i in range(3)]
    return dict(KT=kt, KH=kh, KW=kw, ST=stride[0], SH=stride[1],
                SW=stride[2], PT=padding[0], PH=padding[1],
                PW=padding[2]), out


def _taps_by_channel(weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, kt, kh, kw) -> (kt*kh*kw, C), contiguous."""
    return weight.reshape(weight.shape[0], -1).t().contiguous()


def _align(channels: int, *tensors) -> int:
    """The largest power of two up to 16 dividing ``channels`` and every
    position (non-channel) stride of ``tensors``."""
    values = [channels] + [s for t in tensors
                           for i, s in enumerate(t.stride()) if i != 1]
    align = 16
    while align > 1 and any(v % align for v in values):
        align //= 2
    return align


def _strides(t: torch.Tensor, align: int) -> list:
    """(n, c, t, h, w) strides, the position ones divided by ``align``."""
    return [s if i == 1 else s // align for i, s in enumerate(t.stride())]


def _big(*tensors) -> bool:
    """Whether an offset may pass int32 (then the kernel computes int64)."""
    return any(
        sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride())) >
        _INT32_MAX for t in tensors) or any(t.numel() > _INT32_MAX
                                            for t in tensors)


def _config(config: Optional[dict], dtype: torch.dtype) -> dict:
    """Launch keywords: ``config``, else a fixed tile under the interpreter
    and for float64, else none (autotuned)."""
    if config is not None:
        return dict(config)
    if interpreting():
        return dict(INTERPRETER_CONFIG)
    return dict(_FLOAT64_CONFIG) if dtype == torch.float64 else {}


def forward(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int],
            padding: Sequence[int],
            config: Optional[dict] = None) -> torch.Tensor:
    """Channelwise conv3d forward; the output is channels-last-3d.

    Args:
        x (Tensor): Input (N, C, T, H, W), any layout (channels-last-3d is
            read without a copy).
        weight (Tensor): (C, 1, kt, kh, kw), same dtype as ``x``.
        stride (Sequence[int]): (st, sh, sw).
        padding (Sequence[int]): (pt, ph, pw), zero padding.
        config (dict, optional): ``BLOCK_P``/``BLOCK_C`` (and
            ``num_warps``) instead of autotuning.

    Returns:
        Tensor: (N, C, To, Ho, Wo) in ``x``'s dtype.
    """
    _check(x, weight, stride, padding)
    geo, (to, ho, wo) = _geometry(x, weight, stride, padding)
    n, c, t, h, w = x.shape
    x = x.contiguous(memory_format=CL)
    y = torch.empty((n, c, to, ho, wo), dtype=x.dtype, device=x.device,
                    memory_format=CL)
    m = n * to * ho * wo
    if y.numel() == 0:
        return y
    wt = _taps_by_channel(weight.to(x.dtype))
    kw = _config(config, x.dtype)
    kernel = _kernel('forward', _forward_kernel, _TILE_CONFIGS, bool(kw))

    def grid(meta):
        return (triton.cdiv(m, meta['BLOCK_P']),
                triton.cdiv(c, meta['BLOCK_C']))

    align = _align(c, x, y)
    kernel[grid](x, wt, y, c // align, t, h, w, to, ho, wo, m,
                 m.bit_length(), *_strides(x, align), *_strides(y, align),
                 **geo,
                 ALIGN=align, BIG=_big(x, y),
                 ACC64=x.dtype == torch.float64, **kw)
    return y


def grad_input(grad_out: torch.Tensor, weight: torch.Tensor,
               input_shape: Sequence[int], stride: Sequence[int],
               padding: Sequence[int],
               config: Optional[dict] = None) -> torch.Tensor:
    """grad_input of the channelwise conv3d (channels-last-3d, in
    ``grad_out``'s dtype) for an input of shape ``input_shape``."""
    n, c, t, h, w = input_shape
    x_meta = torch.empty(input_shape, device='meta')
    _check(x_meta, weight, stride, padding)
    geo, (to, ho, wo) = _geometry(x_meta, weight, stride, padding)
    if tuple(grad_out.shape) != (n, c, to, ho, wo):
        raise ValueError(
            f'grad_output has shape {tuple(grad_out.shape)}; the '
            f'convolution of an input {tuple(input_shape)} gives '
            f'{(n, c, to, ho, wo)}')
    g = grad_out.contiguous(memory_format=CL)
    gi = torch.empty(tuple(input_shape), dtype=g.dtype, device=g.device,
                     memory_format=CL)
    m = n * t * h * w
    if m * c == 0:
        return gi
    if g.numel() == 0:
        return gi.zero_()
    wt = _taps_by_channel(weight.to(g.dtype))
    kw = _config(config, g.dtype)
    kernel = _kernel('grad_input', _grad_input_kernel, _TILE_CONFIGS,
                     bool(kw))

    def grid(meta):
        return (triton.cdiv(m, meta['BLOCK_P']),
                triton.cdiv(c, meta['BLOCK_C']))

    align = _align(c, g, gi)
    kernel[grid](g, wt, gi, c // align, t, h, w, to, ho, wo, m,
                 m.bit_length(), *_strides(g, align), *_strides(gi, align),
                 **geo,
                 ALIGN=align, BIG=_big(g, gi),
                 ACC64=g.dtype == torch.float64, **kw)
    return gi


def _num_parts(m: int) -> int:
    """How many position ranges grad_weight splits ``m`` output positions
    into: about 512 positions per range, at most 1024 ranges (enough
    programs to fill an H100/H200 with a few channel blocks)."""
    return max(1, min(triton.cdiv(m, 512), 1024))


def grad_weight(grad_out: torch.Tensor, x: torch.Tensor,
                weight_shape: Sequence[int], stride: Sequence[int],
                padding: Sequence[int],
                config: Optional[dict] = None,
                num_parts: Optional[int] = None) -> torch.Tensor:
    """grad_weight (C, 1, kt, kh, kw) of the channelwise conv3d, in ``x``'s
    dtype, accumulated in float32 (float64 for float64)."""
    w_meta = torch.empty(tuple(weight_shape), device='meta')
    _check(x, w_meta, stride, padding)
    geo, (to, ho, wo) = _geometry(x, w_meta, stride, padding)
    n, c, t, h, w = x.shape
    if tuple(grad_out.shape) != (n, c, to, ho, wo):
        raise ValueError(
            f'grad_output has shape {tuple(grad_out.shape)}; the '
            f'convolution of an input {tuple(x.shape)} gives '
            f'{(n, c, to, ho, wo)}')
    taps = geo['KT'] * geo['KH'] * geo['KW']
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    m = n * to * ho * wo
    if m * c == 0:
        return torch.zeros(tuple(weight_shape), dtype=x.dtype,
                           device=x.device)
    x = x.contiguous(memory_format=CL)
    g = grad_out.to(x.dtype).contiguous(memory_format=CL)
    parts = num_parts or _num_parts(m)
    per_part = triton.cdiv(m, parts)
    parts = triton.cdiv(m, per_part)
    partial = torch.empty((parts, taps, c), dtype=acc_dtype, device=x.device)
    kw = _config(config, x.dtype)
    if kw and config is None and x.dtype == torch.float64:
        kw['BLOCK_P'] = 8  # a [taps, positions, channels] tile
    kernel = _kernel('grad_weight', _grad_weight_kernel, _GW_CONFIGS,
                     bool(kw))

    def grid(meta):
        return (parts, triton.cdiv(c, meta['BLOCK_C']))

    align = _align(c, g, x)
    kernel[grid](g, x, partial, c // align, t, h, w, to, ho, wo, m,
                 m.bit_length(), per_part, *_strides(g, align),
                 *_strides(x, align), **geo,
                 KPAD=triton.next_power_of_2(taps), ALIGN=align,
                 BIG=_big(g, x), ACC64=x.dtype == torch.float64, **kw)
    gw = partial.sum(0).t().reshape(tuple(weight_shape))
    return gw.to(x.dtype).contiguous()


def backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
             stride: Sequence[int], padding: Sequence[int], need_input: bool,
             need_weight: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(grad_input, grad_weight); an empty tensor for a gradient not asked
    for (the layout of ``torch.ops.x3d_plugin.channelwise_conv3d_backward``).
    """
    g = grad_out.to(x.dtype)
    gi = (grad_input(g, weight, tuple(x.shape), stride, padding)
          if need_input else x.new_empty(0))
    gw = (grad_weight(g, x, tuple(weight.shape), stride, padding).to(
        weight.dtype) if need_weight else weight.new_empty(0))
    return gi, gw
