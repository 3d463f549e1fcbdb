"""Speed of the channelwise (depthwise) conv3d on a CUDA GPU: x3d_plugin's
Triton kernels against cuDNN with a contiguous (NCDHW) and a channels-last
(NDHWC) input, at the layer shapes of X3D-M and X3D-L training clips.

Shapes: every distinct channelwise convolution of the network on one
training batch (X3D-M: 16 clips of 16x224x224, X3D-L: 8 clips of
16x312x312, the ``train_dataloader`` batch sizes of configs/x3d_m_k400.py
and configs/x3d_l_k400.py): the stem's 5x1x1 at half the crop, then per
stage the first block's stride-2 3x3x3 and the others' stride-1 3x3x3.

For every shape and dtype, forward+backward (grad_input and grad_weight)
is timed with CUDA events for cuDNN NCDHW, cuDNN NDHWC and Triton
(:class:`x3d_plugin.ops.ChannelwiseConv3d` with the fast path off and on),
and the forward alone for cuDNN NDHWC and Triton; times are medians over
up to ``--repeats`` rounds after a warm-up (the first Triton call of a
shape autotunes), the variants alternating within each round. Before
timing, Triton's output and gradients are compared with cuDNN's (largest
difference relative to the largest cuDNN value, cuDNN without TF32); the
timings keep PyTorch's TF32 setting. ``network`` rows add the
layers up, each shape counted as often as the network has it.

Example::

    python tools/benchmark/gpu_op_speed.py                # M and L, fp32+bf16
    python tools/benchmark/gpu_op_speed.py --archs m --dtypes bf16
    python tools/benchmark/gpu_op_speed.py --list-shapes  # no GPU needed
    python tools/benchmark/gpu_op_speed.py --archs l --dtypes bf16 --rows 9
"""
import argparse
import statistics
import sys

import torch

from x3d_plugin.models import VARIANTS
from x3d_plugin.ops import (ChannelwiseConv3d, set_fast_channelwise,
                            triton_channelwise_available, triton_error)

K3, S1, S2, P1 = (3, 3, 3), (1, 1, 1), (1, 2, 2), (1, 1, 1)
STEM = ((5, 1, 1), (1, 1, 1), (2, 0, 0))
# train_dataloader batch_size of configs/x3d_{m,l}_k400.py.
TRAIN_BATCH = {'m': 16, 'l': 8}
DTYPES = dict(fp32=torch.float32, bf16=torch.bfloat16, fp16=torch.float16)


def layer_shapes(arch, batch):
    """(group, batch, channels, (T, H, W), kernel, stride, padding, count)
    of every distinct channelwise convolution of ``arch`` on a batch of
    training clips; ``count``: how many layers of the network have it."""
    variant = VARIANTS[arch]
    structure = variant.structure
    frames, crop = variant.num_frames, variant.train_crop
    group = f'X3D-{arch.upper()} b{batch}'
    size = (crop + 1) // 2
    rows = [(group, batch, structure.stem_width, (frames, size, size)) +
            STEM + (1, )]
    for inner, blocks in zip(structure.inner_widths,
                             structure.stage_blocks):
        rows.append((group, batch, inner, (frames, size, size), K3, S2, P1,
                     1))
        size = (size + 1) // 2
        rows.append((group, batch, inner, (frames, size, size), K3, S1, P1,
                     blocks - 1))
    return rows


def fmt_shape(batch, channels, size, kernel, stride):
    k = 'x'.join(map(str, kernel))
    s = '' if stride == (1, 1, 1) else f' s{"x".join(map(str, stride))}'
    return f'{batch}x{channels}x{"x".join(map(str, size))} k{k}{s}'


def event_time(fn):
    """Milliseconds of ``fn`` on the current stream."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def rel_diff(a, b):
    return ((a.float() - b.float()).abs().max() /
            b.float().abs().max().clamp_min(1e-12)).item()


def bench_shape(batch, channels, size, kernel, stride, padding, dtype,
                repeats, budget_ms):
    """Median ms per variant, the least bytes a fwd+bwd moves, and the
    largest relative difference of Triton's results from cuDNN's."""
    m = ChannelwiseConv3d(channels, kernel, stride, padding).cuda().to(dtype)
    w = m.weight
    x = torch.randn(batch, channels, *size, device='cuda', dtype=dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    set_fast_channelwise(False)
    with torch.no_grad():
        y = m(x_cl)
    g_cl = torch.randn_like(y).contiguous(
        memory_format=torch.channels_last_3d)
    g = g_cl.contiguous()

    def fwd_bwd(inp, grad, fast):
        set_fast_channelwise(fast)
        xi = inp.detach().requires_grad_()
        out = m(xi)
        return (out, ) + torch.autograd.grad(out, (xi, w), grad)

    def fwd(inp, fast):
        set_fast_channelwise(fast)
        with torch.no_grad():
            m(inp)

    # The reference in float32: cuDNN may use TF32 for float32 convolutions
    # (torch.backends.cudnn.allow_tf32, on by default, kept for timing).
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        ref = fwd_bwd(x_cl, g_cl, False)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    got = fwd_bwd(x_cl, g_cl, True)  # autotunes this shape
    diff = max(rel_diff(a, b) for a, b in zip(got, ref))
    del ref, got
    runs = {
        'cudnn_ncdhw': lambda: fwd_bwd(x, g, False),
        'cudnn_ndhwc': lambda: fwd_bwd(x_cl, g_cl, False),
        'triton': lambda: fwd_bwd(x_cl, g_cl, True),
        'cudnn_fwd': lambda: fwd(x_cl, False),
        'triton_fwd': lambda: fwd(x_cl, True),
    }
    warm = sum(event_time(fn) for fn in runs.values())
    repeats = max(2, min(repeats, int(budget_ms / max(warm, 1e-3))))
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            times[k].append(event_time(fn))
    set_fast_channelwise(True)
    med = {k: statistics.median(v) for k, v in times.items()}
    nbytes = x.element_size() * 2 * (x.numel() + y.numel() + w.numel())
    return med, nbytes, diff


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', nargs='+', default=['m', 'l'],
                        choices=sorted(TRAIN_BATCH))
    parser.add_argument('--dtypes', nargs='+', default=['fp32', 'bf16'],
                        choices=sorted(DTYPES))
    parser.add_argument('--batch', type=int, default=None,
                        help='clips per batch (default: the training '
                        'batch of each arch, M 16 and L 8)')
    parser.add_argument('--repeats', type=int, default=10,
                        help='timed rounds per shape (fewer where a round '
                        'takes long; default 10)')
    parser.add_argument('--budget-ms', type=float, default=3000,
                        help='about how long the timed rounds of one shape '
                        'may take (default 3000)')
    parser.add_argument('--rows', nargs='+', type=int, default=None,
                        help='time only these shapes: 1-based positions '
                        'in the order of --list-shapes (the network rows '
                        'then add up these alone)')
    parser.add_argument('--list-shapes', action='store_true',
                        help='print the layer shapes and exit (no GPU '
                        'needed)')
    args = parser.parse_args(argv)
    shapes = [row for arch in args.archs
              for row in layer_shapes(arch, args.batch or TRAIN_BATCH[arch])]
    layers = {}
    for row in shapes:
        layers[row[0]] = layers.get(row[0], 0) + row[-1]
    if args.rows:
        wrong = [i for i in args.rows if not 1 <= i <= len(shapes)]
        if wrong:
            parser.error(f'--rows {wrong[0]}: there are {len(shapes)} '
                         'shapes (see --list-shapes)')
        shapes = [shapes[i - 1] for i in sorted(set(args.rows))]
    if args.list_shapes:
        for group, batch, channels, size, kernel, stride, _, _ in shapes:
            print(f'{group} | '
                  f'{fmt_shape(batch, channels, size, kernel, stride)}')
        return None
    if not torch.cuda.is_available():
        sys.exit('no CUDA device (this benchmark times the GPU path)')
    if not triton_channelwise_available():
        sys.exit(f'the Triton kernels are unavailable: {triton_error()}')
    import triton
    cmd = 'python tools/benchmark/gpu_op_speed.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, '
          f'triton {triton.__version__}, cuDNN '
          f'{torch.backends.cudnn.version()}\n\n`{cmd.strip()}`; times in '
          f'ms (median of up to {args.repeats}); diff: largest |Triton - '
          'cuDNN| / largest |cuDNN| over output, grad_input, grad_weight '
          '(cuDNN without TF32)\n')
    print('| group | shape (N x C x T x H x W) | dtype | layers '
          '| cuDNN NCDHW fwd+bwd | cuDNN NDHWC fwd+bwd '
          '| Triton fwd+bwd (fwd / bwd) | cuDNN NDHWC fwd '
          '| Triton vs best cuDNN | Triton GB/s | diff |')
    print('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|')
    rows = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        totals = {}
        for (group, batch, channels, size, kernel, stride, padding,
             count) in shapes:
            med, nbytes, diff = bench_shape(batch, channels, size, kernel,
                                            stride, padding, dtype,
                                            args.repeats, args.budget_ms)
            best = min(med['cudnn_ncdhw'], med['cudnn_ndhwc'])
            tri = med['triton']
            total = totals.setdefault(group, dict.fromkeys(med, 0.0))
            for k in med:
                total[k] += count * med[k]
            shape = fmt_shape(batch, channels, size, kernel, stride)
            rows.append((group, shape, dtype_name, med, diff))
            print(f'| {group} | {shape} | {dtype_name} | {count} '
                  f'| {med["cudnn_ncdhw"]:.2f} | {med["cudnn_ndhwc"]:.2f} '
                  f'| {tri:.2f} ({med["triton_fwd"]:.2f} / '
                  f'{tri - med["triton_fwd"]:.2f}) '
                  f'| {med["cudnn_fwd"]:.2f} | {best / tri:.2f}x '
                  f'| {nbytes / tri / 1e6:.0f} | {diff:.1e} |',
                  flush=True)
        for group, t in totals.items():
            best = min(t['cudnn_ncdhw'], t['cudnn_ndhwc'])
            timed = sum(row[-1] for row in shapes if row[0] == group)
            what = ('network (all channelwise layers)'
                    if timed == layers[group] else
                    f'{timed} of {layers[group]} layers (--rows)')
            print(f'| {group} | {what} '
                  f'| {dtype_name} | | {t["cudnn_ncdhw"]:.1f} '
                  f'| {t["cudnn_ndhwc"]:.1f} | {t["triton"]:.1f} '
                  f'({t["triton_fwd"]:.1f} / '
                  f'{t["triton"] - t["triton_fwd"]:.1f}) '
                  f'| {t["cudnn_fwd"]:.1f} | {best / t["triton"]:.2f}x '
                  '| | |', flush=True)
    return rows


if __name__ == '__main__':
    main()
