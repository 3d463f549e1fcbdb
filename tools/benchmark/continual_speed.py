"""Latency of a clip forward against a continual step, X3D-XS/S/M.

For each variant at its clip and training crop (XS 4x160², S 13x160², M
16x224²; random weights, eval mode, batch 1) it times one clip forward of
the clip-mode network (backbone and head) and one step of its continual form
(:class:`x3d_plugin.models.ContinualX3D`, windows of the clip length), each
call alternated with the other in one process so that both see the same
load, and prints the medians with the FLOPs of each (counted as the paper
counts them, on the meta device) and the machine: CPU model, ISA flags,
threads and the 1-minute load average before and after.

A clip forward gives one prediction per clip; a continual step gives one
per frame. Per prediction at a stride of one frame, clip mode would run a
whole clip forward per frame.

Example (the table in the docs)::

    python tools/benchmark/continual_speed.py --threads 1 2 --repeats 10
"""
import argparse
import os
import time

import numpy as np
import torch

from x3d_plugin.models import (VARIANTS, X3D, ContinualX3D, X3DHead,
                               continual_flops, paper_flops)
from x3d_plugin.utils.benchmark import describe_machine


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', nargs='+', default=['xs', 's', 'm'],
                        choices=sorted(VARIANTS))
    parser.add_argument('--threads', type=int, nargs='+', default=[2],
                        help='torch thread counts, one table row per '
                        'variant and count (default 2)')
    parser.add_argument('--repeats', type=int, default=20,
                        help='timed calls of each kind per variant')
    return parser.parse_args(argv)


def load() -> float:
    return os.getloadavg()[0]


def time_call(fn) -> float:
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def measure(arch: str, repeats: int):
    variant = VARIANTS[arch]
    frames, crop = variant.num_frames, variant.train_crop
    backbone = X3D(arch=arch).eval()
    head = X3DHead(400, backbone.stage_widths[-1],
                   backbone.inner_widths[-1]).eval()
    net = ContinualX3D(backbone, head, frames, frames).eval()
    clip_flops = paper_flops(
        torch.nn.ModuleDict(dict(backbone=backbone, head=head)),
        (1, 3, frames, crop, crop),
        forward=lambda m, x: m['head'](m['backbone'](x)))['total']
    step_flops = continual_flops(net, (1, 3, crop, crop))
    clip = torch.randn(1, 3, frames, crop, crop)
    frame = torch.randn(1, 3, crop, crop)

    def clip_forward():
        with torch.no_grad():
            head(backbone(clip))

    for _ in range(2):  # first calls: allocation and kernel selection
        clip_forward()
        net.step(frame)
    clip_times, step_times = [], []
    for _ in range(repeats):
        clip_times.append(time_call(clip_forward))
        step_times.append(time_call(lambda: net.step(frame)))
    return dict(arch=arch, input=f'{frames}x{crop}²',
                clip_ms=1e3 * float(np.median(clip_times)),
                step_ms=1e3 * float(np.median(step_times)),
                clip_gflops=clip_flops / 1e9, step_gflops=step_flops / 1e9)


def main(argv=None):
    args = parse_args(argv)
    before = load()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows += [dict(measure(arch, args.repeats), threads=threads)
                 for arch in args.archs]
    after = load()
    print(describe_machine().replace(
        f'{torch.get_num_threads()} threads', 'threads as in the table'))
    print(f'1-minute load average {before:.1f} before, {after:.1f} after '
          f'({os.cpu_count()} CPUs); median of {args.repeats} alternated '
          'calls; batch 1, random weights, float32')
    print()
    print('| variant | clip | threads | clip forward (ms) | continual step '
          '(ms) | latency ratio | clip GFLOPs | step GFLOPs | FLOP ratio |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for r in rows:
        print(f"| X3D-{r['arch'].upper()} | {r['input']} | {r['threads']} | "
              f"{r['clip_ms']:.1f} | {r['step_ms']:.1f} | "
              f"{r['clip_ms'] / r['step_ms']:.1f}x | "
              f"{r['clip_gflops']:.3f} | {r['step_gflops']:.3f} | "
              f"{r['clip_gflops'] / r['step_gflops']:.1f}x |")
    return rows


if __name__ == '__main__':
    main()
