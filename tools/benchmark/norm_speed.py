"""Speed of the fused channels-last BN (+ residual, ReLU or SiLU) and SE +
swish CPU kernels against the modules they replace, at every site of one
X3D training step.

The sites are recorded from one forward of the model (``--arch``, the
training clip, ``--batch``): for each distinct (shape, activation,
residual) of :func:`~x3d_plugin.ops.batch_norm.batch_norm_act` and shape of
:func:`~x3d_plugin.ops.batch_norm.squeeze_excite_silu`, forward + backward
is timed (gradients set to None before each, so none is accumulated)
with the fused kernels and with the modules
(``set_fast_batch_norm(False)``: ``nn.BatchNorm3d``, ``F.relu``,
``F.silu``, the SE module), channels-last inputs, alternating within each
round, median over ``--repeats`` rounds. The last row sums every site
times its count: the time one training step spends there.

Example (the table in docs/benchmarks.md)::

    python tools/benchmark/norm_speed.py --threads 2 --dtype float32 bfloat16
"""
import argparse
import statistics
import sys
import time
from collections import Counter

import torch

from x3d_plugin.models import VARIANTS, build_x3d_recognizer
from x3d_plugin.ops import batch_norm as bn_ops
from x3d_plugin.ops.batch_norm import set_fast_batch_norm
from x3d_plugin.utils.benchmark import describe_machine
from x3d_plugin.utils.malloc import keep_freed_memory

CL = torch.channels_last_3d


def record_sites(arch, batch):
    """Counter of ('bn', shape, act, residual) and ('se', shape, None,
    False) over one forward of ``arch`` at its training clip."""
    import x3d_plugin.models.backbones.x3d as x3d_mod
    import x3d_plugin.models.heads.x3d_head as head_mod
    sites = Counter()
    real_bn, real_se = bn_ops.batch_norm_act, bn_ops.squeeze_excite_silu

    def bn_spy(x, bn, act=None, residual=None):
        sites[('bn', tuple(x.shape), act, residual is not None)] += 1
        return real_bn(x, bn, act, residual)

    def se_spy(x, excite):
        sites[('se', tuple(x.shape), None, False)] += 1
        return real_se(x, excite)

    variant = VARIANTS[arch]
    model = build_x3d_recognizer(arch, num_classes=400)
    x = torch.randn(batch, 3, variant.num_frames, variant.train_crop,
                    variant.train_crop)
    patched = [(x3d_mod, 'batch_norm_act', bn_spy),
               (x3d_mod, 'squeeze_excite_silu', se_spy),
               (head_mod, 'batch_norm_act', bn_spy)]
    saved = [(m, n, getattr(m, n)) for m, n, _ in patched]
    try:
        for module, name, fn in patched:
            setattr(module, name, fn)
        with torch.no_grad():
            model.backbone.train()
            model.cls_head(model.backbone(x))
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)
    return sites


def site_step(kind, shape, act, residual, dtype):
    """A function running one forward + backward of the site."""
    from x3d_plugin.models.backbones.x3d import SqueezeExcitation
    x = torch.randn(shape).to(dtype).to(memory_format=CL)
    x.requires_grad_()
    grad = torch.randn(shape).to(dtype).to(memory_format=CL)
    if kind == 'se':
        se = SqueezeExcitation(shape[1]).to(dtype)

        def step():
            x.grad = None
            se.zero_grad(set_to_none=True)
            se.forward_silu(x).backward(grad)
    else:
        bn = torch.nn.BatchNorm3d(shape[1]).train()
        res = (torch.randn(shape).to(dtype).to(memory_format=CL)
               .requires_grad_() if residual else None)

        def step():
            x.grad = None
            if res is not None:
                res.grad = None
            bn.zero_grad(set_to_none=True)
            bn_ops.batch_norm_act(x, bn, act, res).backward(grad)
    return step


def time_site(step, fused, inner):
    set_fast_batch_norm(fused)
    try:
        start = time.perf_counter()
        for _ in range(inner):
            step()
        return (time.perf_counter() - start) / inner
    finally:
        set_fast_batch_norm(True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='xs', choices=sorted(VARIANTS))
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--dtype', nargs='+', default=['float32'],
                        choices=['float32', 'bfloat16'])
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args(argv)
    keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    from x3d_plugin.ops import fast_channelwise_available
    if not fast_channelwise_available():
        sys.exit('the C++ extension is unavailable: nothing to compare')
    sites = record_sites(args.arch, args.batch)
    cmd = 'python tools/benchmark/norm_speed.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    print(f'{describe_machine()}\n\n`{cmd.strip()}`: X3D-{args.arch.upper()}'
          f' batch {args.batch}, ms per forward + backward of one site '
          f'(median of {args.repeats}), channels-last\n')
    names = [('fp32' if d == 'float32' else 'bf16') for d in args.dtype]
    head = ' | '.join(f'modules {n} | fused {n} | speed-up {n}'
                      for n in names)
    print(f'| site | shape (N x C x T x H x W) | count | {head} |')
    print('|---|---|---:|' + '---:|---:|---:|' * len(names))
    totals = {n: [0.0, 0.0] for n in names}
    rows = []
    for (kind, shape, act, residual), count in sorted(
            sites.items(), key=lambda kv: (-kv[0][1][3], kv[0][1][1],
                                           str(kv[0]))):
        label = ('SE + swish' if kind == 'se' else
                 'BN' + (' + residual' if residual else '') +
                 (f' + {act}' if act else ''))
        cells = []
        for dname, name in zip(args.dtype, names):
            step = site_step(kind, shape, act, residual,
                             getattr(torch, dname))
            size = 1 if shape[3] >= 40 else 5
            for fused in (True, False):
                time_site(step, fused, size)  # warm-up
            times = {True: [], False: []}
            for _ in range(args.repeats):
                for fused in (False, True):
                    times[fused].append(time_site(step, fused, size))
            mod = statistics.median(times[False]) * 1e3
            ours = statistics.median(times[True]) * 1e3
            totals[name][0] += mod * count
            totals[name][1] += ours * count
            cells.append(f'{mod:.3f} | {ours:.3f} | {mod / ours:.2f}x')
            rows.append((label, shape, count, dname, mod, ours))
        dims = 'x'.join(str(s) for s in shape)
        print(f'| {label} | {dims} | {count} | {" | ".join(cells)} |')
    cells = [f'{m:.1f} | {o:.1f} | {m / o:.2f}x'
             for m, o in (totals[n] for n in names)]
    print(f'| **one training step** | all sites | {sum(sites.values())} '
          f'| {" | ".join(cells)} |')
    return rows


if __name__ == '__main__':
    main()
