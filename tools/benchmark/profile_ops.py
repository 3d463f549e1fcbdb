"""Where a training step spends its time: the profiler's top operators for
MMAction2's X3D at its defaults and for ours, same weights and input.

One training step (forward, cross-entropy, backward, SGD) per model is
profiled after two warm-up steps; the tables list the operators with the
most self time (time inside the operator, not its children).

Example (the tables in docs/benchmarks.md)::

    python tools/benchmark/profile_ops.py --arch m --batch 2 --top 8
"""
import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from x3d_plugin.apis.benchmark import (BASELINE, build_pair,
                                       describe_machine, model_variants,
                                       stock_archs, time_train_step)
from x3d_plugin.models import VARIANTS
from x3d_plugin.utils.malloc import keep_freed_memory


def profile_step(model, x, y, device, top):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    for _ in range(2):
        time_train_step(model, x, y, optimizer, torch.float32, device)
    activities = [ProfilerActivity.CPU]
    if device.startswith('cuda'):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        time_train_step(model, x, y, optimizer, torch.float32, device)
    attr = ('self_device_time_total'
            if device.startswith('cuda') else 'self_cpu_time_total')
    events = [e for e in prof.key_averages()
              if not e.key.startswith('ProfilerStep')]
    total = sum(getattr(e, attr) for e in events)
    events.sort(key=lambda e: getattr(e, attr), reverse=True)
    return total, [(e.key, getattr(e, attr), e.count) for e in events[:top]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='m', choices=stock_archs())
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--top', type=int, default=8)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    keep_freed_memory()  # as tools/train.py does
    torch.manual_seed(0)
    frames, size = (VARIANTS[args.arch].num_frames,
                    VARIANTS[args.arch].train_crop)
    theirs, ours = build_pair(args.arch)
    models = model_variants(theirs, ours, args.device)
    print(describe_machine())
    x = torch.randn(args.batch, 3, frames, size, size, device=args.device)
    y = torch.randint(0, 400, (args.batch, ), device=args.device)
    for name in (BASELINE, 'ours default (channels-last)'):
        total, rows = profile_step(models[name], x, y, args.device, args.top)
        print(f'\nX3D-{args.arch.upper()} {frames}x{size}², batch '
              f'{args.batch}, {name}: one train step, {total / 1e3:.0f} ms '
              f'of operator self time on {args.device}\n')
        print('| operator | self ms | share | calls |')
        print('| --- | --- | --- | --- |')
        for key, t, count in rows:
            print(f'| `{key}` | {t / 1e3:.1f} | {100 * t / total:.1f}% | '
                  f'{count} |')


if __name__ == '__main__':
    main()
