"""Measures which forward of the channelwise conv3d is faster on this CPU,
ours or PyTorch's (oneDNN's channels-last ``F.conv3d``), and writes the
choice for this CPU's class into the forward policy
(:mod:`x3d_plugin.ops.forward_policy`).

At every distinct channelwise layer shape of X3D-XS (batch 8, 4x160²),
the demo (batch 16, 8x48²) and X3D-M (batch 2, 16x224²), in float32 and
bfloat16, both forwards run alternated within each round (no autograd,
channels-last input); the median time per shape is kept. ``--clock cpu
--threads 1`` times the CPU time of the one thread instead of the elapsed
time, for a machine whose cores other jobs share. Per dtype, kernel
(3x3x3 or kt x 1 x 1) and H/W stride the script then picks the rule
``width >= W and channels >= C`` (or none) that loses least against the
faster forward at each shape (sum over shapes of log(time chosen / time of
the faster)), and writes the rules, the machine, the command and the
measured times as this class's entry.

Example::

    # write into the packaged x3d_plugin/ops/forward_policy.json
    python tools/benchmark/measure_cw_policy.py --threads 2
    # or into a file of its own, used with X3D_PLUGIN_CW_POLICY=...
    python tools/benchmark/measure_cw_policy.py --threads 2 \\
        --output work_dirs/cw_policy.json
"""
import argparse
import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from x3d_plugin.models import VARIANTS
from x3d_plugin.ops import cpu_extension, forward_policy
from x3d_plugin.models.variants import x3d_layer_shapes
from x3d_plugin.ops.forward_policy import rule_matches
from x3d_plugin.utils.benchmark import describe_machine
from x3d_plugin.utils.fileio import write_file_atomically
from x3d_plugin.utils.malloc import keep_freed_memory

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16}


def shapes():
    """Distinct (channels, (T, H, W), kernel, stride, padding, batch)."""
    rows = (x3d_layer_shapes('xs', 8, *VARIANTS['xs'].train_input[:2]) +
            x3d_layer_shapes('xs', 16, 8, 48) +
            x3d_layer_shapes('m', 2, *VARIANTS['m'].train_input[:2]))
    return sorted(set(rows))


def time_forwards(batch, channels, size, kernel, stride, padding, dtype,
                  rounds, clock=time.perf_counter):
    """Median seconds of (ours, oneDNN's) forward at one shape."""
    x = torch.randn(batch, channels, *size, dtype=dtype).contiguous(
        memory_format=torch.channels_last_3d)
    w = torch.randn(channels, 1, *kernel, dtype=dtype)
    ops = cpu_extension.kernels(channels, dtype)
    runs = {
        'ours': lambda: ops.forward(x, w, list(stride), list(padding)),
        'onednn': lambda: F.conv3d(x, w, None, stride, padding, 1, channels),
    }
    times = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(rounds):
            for k, fn in runs.items():
                t0 = clock()
                fn()
                times[k].append(clock() - t0)
    return statistics.median(times['ours']), statistics.median(
        times['onednn'])


def kernel_key(kernel):
    return 'Tx1x1' if tuple(kernel[1:]) == (1, 1) else 'x'.join(
        map(str, kernel))


def best_rule(points, key, stride_hw):
    """The rule (or None) for one (kernel, stride) group of measured
    points ``[(channels, width, ours_s, onednn_s)]``."""

    def loss(rule):
        total = 0.0
        for c, w, ours, onednn in points:
            mine = ours if rule and rule_matches(
                rule, c, w, (3, 1, 1) if key == 'Tx1x1' else tuple(
                    map(int, key.split('x'))), stride_hw) else onednn
            total += math.log(mine / min(ours, onednn))
        return total

    candidates = [None]
    for mw in sorted({0} | {p[1] for p in points}):
        for mc in sorted({0} | {p[0] for p in points}):
            candidates.append({'kernel': key, 'stride_hw': stride_hw,
                               'min_width': mw, 'min_channels': mc})
    # Ties go to the earlier candidate: no rule, then the widest one.
    return min(candidates, key=loss)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch\'s)')
    parser.add_argument('--rounds', type=int, default=9,
                        help='alternated rounds per shape (median)')
    parser.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                        help='wall: elapsed time; cpu: the CPU time of the '
                        'calling thread (needs --threads 1; not inflated '
                        'by other processes taking the cores)')
    parser.add_argument('--dtypes', nargs='+', default=list(DTYPES),
                        choices=list(DTYPES))
    parser.add_argument('--output', type=Path, default=None,
                        help='policy file to write (default: the packaged '
                        'x3d_plugin/ops/forward_policy.json, whose other '
                        'classes are kept)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the entry, write nothing')
    args = parser.parse_args(argv)
    keep_freed_memory()  # as tools/train.py does
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == 'cpu' and torch.get_num_threads() != 1:
        sys.exit('--clock cpu times one thread: add --threads 1')
    clock = time.thread_time if args.clock == 'cpu' else time.perf_counter
    if not cpu_extension.fast_channelwise_available():
        sys.exit('the fast operator is unavailable: '
                 f'{cpu_extension.extension_error()}')
    isa = cpu_extension.cpu_isas()[0]
    if cpu_extension.active_isa() != isa:
        sys.exit(f'the forward choice is per CPU class: measure it with '
                 f'the {isa} build (unset X3D_PLUGIN_CPU_ISA)')
    cmd = 'python tools/benchmark/measure_cw_policy.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    machine = describe_machine()
    print(f'{machine}\nbuild class: {isa}\n`{cmd.strip()}`\n')
    print('| dtype | shape (N x C x T x H x W) | kernel | stride | ours ms '
          '| oneDNN ms | oneDNN / ours |')
    print('|---|---|---|---|---:|---:|---:|')
    measured, groups = [], {}
    for dname in args.dtypes:
        for batch, c, size, kernel, stride, padding in shapes():
            ours, onednn = time_forwards(batch, c, size, kernel, stride,
                                         padding, DTYPES[dname], args.rounds,
                                         clock)
            shape = f'{batch}x{c}x{"x".join(map(str, size))}'
            print(f'| {dname} | {shape} | {"x".join(map(str, kernel))} | '
                  f'{stride[1]} | {ours * 1e3:.3f} | {onednn * 1e3:.3f} | '
                  f'{onednn / ours:.2f}x |', flush=True)
            measured.append({'dtype': dname, 'shape': shape,
                             'kernel': list(kernel), 'stride': list(stride),
                             'ours_ms': round(ours * 1e3, 4),
                             'onednn_ms': round(onednn * 1e3, 4)})
            groups.setdefault((dname, kernel_key(kernel), stride[1]),
                              []).append((c, size[2], ours, onednn))
    rules = {d: [] for d in args.dtypes}
    for (dname, key, stride_hw), points in sorted(groups.items()):
        rule = best_rule(points, key, stride_hw)
        if rule:
            rules[dname].append(rule)
    entry = {
        'machine': machine,
        'threads': torch.get_num_threads(),
        'clock': args.clock,
        'command': cmd.strip(),
        'date': datetime.date.today().isoformat(),
        'rules': rules,
        'measured': measured,
    }
    print('\nrules:', json.dumps(rules, indent=1))
    if args.dry_run:
        return entry
    path = args.output or forward_policy.POLICY_FILE
    policy = {'classes': {}}
    if path.is_file():
        policy = json.loads(path.read_text())
    policy['classes'][isa] = entry
    write_file_atomically(json.dumps(policy, indent=1) + '\n', str(path))
    print(f'wrote the {isa} entry into {path}')
    return entry


if __name__ == '__main__':
    main()
