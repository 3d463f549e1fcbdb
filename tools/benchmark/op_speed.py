"""Speed of the channelwise (depthwise) conv3d on CPU: aten vs x3d_plugin's
operator, at the layer shapes of X3D-XS, the demo and X3D-M.

For every shape, forward+backward (grad_input and grad_weight) is timed
for aten with a contiguous (NCDHW) input, aten with a channels-last
(NDHWC) input, and ours (:class:`x3d_plugin.ops.ChannelwiseConv3d` with the
fast path on; the same module with it off is aten). Times are medians over
``--repeats`` rounds (fewer where a round takes over
~4 s) after a warm-up, the three variants alternating within
each round. Our forward alone is timed too (bwd = fwd+bwd - fwd).

Bandwidth: the least a forward+backward must move is
``bytes = e * (2 * numel(x) + 2 * numel(y) + 2 * numel(w))`` with ``e``
the element size: read x (once) and write grad_input, write y and read
grad_output, read w and write grad_weight. ``GB/s = bytes / time`` of ours,
shown also as a % of the copy bandwidth measured in the same run (a
``torch`` copy of a 256 MiB tensor, bytes read + written / time).

``--isa`` times our operator once per build class named (e.g. ``avx2
avx512_bf16`` on an AVX-512 CPU), alternated in the same rounds, each with
its own columns; the speed-up column is then the first class's.
``--dtype bfloat16`` times every variant in bf16. ``--clock cpu --threads
1`` times the CPU time of the one thread instead of the elapsed time, for a
machine whose cores other jobs share (the copy bandwidth stays elapsed).

Example::

    python tools/benchmark/op_speed.py            # full table (~2-3 min)
    python tools/benchmark/op_speed.py --quick    # smoke test
    python tools/benchmark/op_speed.py --threads 2 --isa avx512_bf16 avx2
"""
import argparse
import statistics
import sys
import time

import torch

from x3d_plugin.models import VARIANTS
from x3d_plugin.ops import (ChannelwiseConv3d, active_isa, cpu_isa,
                            extension_error, fast_channelwise_available,
                            set_fast_channelwise, use_cpu_isa)
from x3d_plugin.models.variants import x3d_layer_shapes
from x3d_plugin.utils.benchmark import describe_machine
from x3d_plugin.utils.malloc import keep_freed_memory


def layer_shapes(group, arch, batch, frames, crop):
    """(group, batch, channels, (T, H, W) input, kernel, stride, padding) of
    every distinct channelwise convolution of the ``arch`` network on
    ``frames`` x ``crop``² clips (see
    :func:`x3d_plugin.models.variants.x3d_layer_shapes`)."""
    return [(group, ) + row
            for row in x3d_layer_shapes(arch, batch, frames, crop)]


SHAPES = (
    layer_shapes('XS b8', 'xs', 8, *VARIANTS['xs'].train_input[:2]) +
    # The demo (configs/x3d_xs_demo.py): batch 16 of 8x48x48 clips.
    layer_shapes('demo b16', 'xs', 16, 8, 48) +
    layer_shapes('M b2', 'm', 2, *VARIANTS['m'].train_input[:2]))


def copy_bandwidth(mib=256, repeats=5):
    """Bytes read + written per second by a torch copy of ``mib`` MiB."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / min(times)


CLOCK = [time.perf_counter]


def timed(fn):
    t0 = CLOCK[0]()
    fn()
    return CLOCK[0]() - t0


def bench_shape(batch, channels, size, kernel, stride, padding, repeats,
                isas, dtype=torch.float32, budget=4.0):
    m = ChannelwiseConv3d(channels, kernel, stride, padding).to(dtype)
    x = torch.randn(batch, channels, *size, dtype=dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    w = m.weight
    with torch.no_grad():
        y = m(x_cl)
    g_cl = torch.randn_like(y)
    g = g_cl.contiguous()

    def fwd_bwd(inp, grad, fast, isa=None):
        set_fast_channelwise(fast)
        if isa:
            use_cpu_isa(isa)
        xi = inp.detach().requires_grad_()
        out = m(xi)
        torch.autograd.grad(out, (xi, w), grad)

    def fwd(inp, fast, isa):
        set_fast_channelwise(fast)
        use_cpu_isa(isa)
        m(inp.detach().requires_grad_())

    runs = {
        'aten_ncdhw': lambda: fwd_bwd(x, g, False),
        'aten_ndhwc': lambda: fwd_bwd(x_cl, g_cl, False),
    }
    for isa in isas:
        runs[f'ours {isa}'] = lambda isa=isa: fwd_bwd(x_cl, g_cl, True, isa)
        runs[f'ours_fwd {isa}'] = lambda isa=isa: fwd(x_cl, True, isa)
    warm = sum(timed(fn) for fn in runs.values())  # warm-up
    # aten's grouped backward takes seconds at some shapes: keep each row
    # within about `budget` seconds.
    repeats = max(1, min(repeats, int(budget / warm)))
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            times[k].append(timed(fn))
    set_fast_channelwise(True)
    use_cpu_isa(None)
    med = {k: statistics.median(v) for k, v in times.items()}
    nbytes = x.element_size() * 2 * (x.numel() + y.numel() + w.numel())
    return med, nbytes


def fmt_shape(batch, channels, size, kernel, stride):
    k = 'x'.join(map(str, kernel))
    s = '' if stride == (1, 1, 1) else f' s{"x".join(map(str, stride))}'
    return (f'{batch}x{channels}x{"x".join(map(str, size))} k{k}{s}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='few repeats and shapes (a smoke test)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch\'s)')
    parser.add_argument('--isa', nargs='+', default=None,
                        help='build classes of our operator to time side '
                        'by side (default: the one this CPU uses)')
    parser.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                        help='wall: elapsed time; cpu: the CPU time of the '
                        'calling thread (needs --threads 1; not inflated '
                        'by other processes taking the cores)')
    parser.add_argument('--dtype', default='float32',
                        choices=['float32', 'bfloat16'])
    parser.add_argument('--repeats', type=int, default=None,
                        help='timed rounds per shape (default 7, quick 2; '
                        'fewer where aten takes seconds)')
    args = parser.parse_args(argv)
    keep_freed_memory()  # as tools/train.py does
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == 'cpu':
        if torch.get_num_threads() != 1:
            sys.exit('--clock cpu times one thread: add --threads 1')
        CLOCK[0] = time.thread_time
    if not fast_channelwise_available():
        sys.exit(f'the fast operator is unavailable: {extension_error()}')
    isas = args.isa or [cpu_isa()]
    for isa in isas:
        try:
            use_cpu_isa(isa)  # builds it now, not inside a timed round
        except ValueError as exc:
            sys.exit(f'--isa {isa}: {exc}')
    use_cpu_isa(None)
    dtype = getattr(torch, args.dtype)
    dname = 'fp32' if dtype == torch.float32 else 'bf16'
    cols = ' | '.join(f'ours {isa} fwd+bwd (fwd / bwd)' for isa in isas)
    extra = ''.join(f' | {isas[0]} speed-up over {isa}'
                    for isa in isas[1:])
    repeats = args.repeats or (2 if args.quick else 7)
    shapes = SHAPES[1:3] + SHAPES[10:12] if args.quick else SHAPES
    bw = copy_bandwidth(64 if args.quick else 256)
    cmd = 'python tools/benchmark/op_speed.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    print(f'{describe_machine()}\n\n`{cmd.strip()}`; copy bandwidth '
          f'{bw / 1e9:.1f} GB/s (read + write); {dname}, {args.clock}-clock '
          f'times in ms (median of up to {repeats}); ours: build class '
          f'{", ".join(isas)} (default on this CPU: {active_isa()})\n')
    print('| group | shape (N x C x T x H x W) | aten NCDHW fwd+bwd '
          f'| aten NDHWC fwd+bwd | {cols} '
          f'| speed-up vs best aten | ours GB/s | % of copy{extra} |')
    print('|---|---|---:|---:|' + '---:|' * len(isas) + '---:|---:|---:|' +
          '---:|' * (len(isas) - 1))
    rows = []
    for group, batch, channels, size, kernel, stride, padding in shapes:
        med, nbytes = bench_shape(batch, channels, size, kernel, stride,
                                  padding, repeats, isas, dtype)
        best = min(med['aten_ncdhw'], med['aten_ndhwc'])
        ours = med[f'ours {isas[0]}']
        gbs = nbytes / ours / 1e9
        rows.append((group, fmt_shape(batch, channels, size, kernel,
                                      stride), med, best / ours, gbs))
        cells = ' | '.join(
            f'{med[f"ours {isa}"] * 1e3:.2f} '
            f'({med[f"ours_fwd {isa}"] * 1e3:.2f} / '
            f'{(med[f"ours {isa}"] - med[f"ours_fwd {isa}"]) * 1e3:.2f})'
            for isa in isas)
        ratios = ''.join(
            f' | {med[f"ours {isa}"] / med[f"ours {isas[0]}"]:.2f}x'
            for isa in isas[1:])
        print(f'| {group} | {rows[-1][1]} | {med["aten_ncdhw"] * 1e3:.2f} '
              f'| {med["aten_ndhwc"] * 1e3:.2f} | {cells} '
              f'| {best / ours:.1f}x | {gbs:.1f} '
              f'| {100 * gbs * 1e9 / bw:.0f}%{ratios} |',
              flush=True)
    return rows


if __name__ == '__main__':
    main()
