"""Train-step and inference speed of our X3D against MMAction2 1.2.0's X3D
carrying the same weights, side by side in one process.

Each configuration is timed in turn within every round (runs alternated:
each round times every train step, then every inference, every other
round in reverse order), after warm-up; the table shows the median over
rounds in clips/s and the ratio to MMAction2 at its defaults. Outputs are
checked to agree (eval, fp32, <= 1e-4) before anything is timed.

Configurations: MMAction2's model at its defaults and with channels-last
input and weights; ours at its defaults (channels-last, the channelwise
convolutions on x3d_plugin.ops, BN with its activations and SE fused by
x3d_plugin.ops.batch_norm), with PyTorch's own channelwise convolution
instead, with PyTorch's BN, activations and SE instead, contiguous, with
gradient checkpointing (``with_cp``) and with BN folded into the
convolutions (inference only); with ``--compile`` also ours and
MMAction2's (channels-last) under ``torch.compile``. ``--precision`` adds
bf16/fp16 autocast rows. ``--memory-batch N`` adds the peak memory of one
training step at batch N, each configuration measured in a fresh process
(CUDA: ``max_memory_allocated``; CPU, Linux: peak resident set during
the step minus the resident set before it).

Example (the tables in docs/benchmarks.md)::

    python tools/benchmark/model_speed.py --archs xs m --batch 2 \
        --rounds 3 --precision fp32 bf16 --memory-batch 8
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from x3d_plugin.apis.benchmark import (BASELINE, INFERENCE_ONLY,
                                       stock_archs, build_pair,
                                       describe_machine, model_variants,
                                       sync, time_train_step)
from x3d_plugin.models import VARIANTS
from x3d_plugin.utils.malloc import keep_freed_memory


def clip_of(arch):
    """(frames, crop) of one training clip of ``arch``."""
    variant = VARIANTS[arch]
    return variant.num_frames, variant.train_crop


def check_outputs(models, x):
    with torch.no_grad():
        outs = {n: m.eval()(x) for n, m in models.items()}
    ref = outs[BASELINE]
    for name, out in outs.items():
        diff = (out - ref).abs().max().item()
        if diff > 1e-4:
            raise SystemExit(f'{name} differs from MMAction2 by {diff:.2e}')
    return max((o - ref).abs().max().item() for o in outs.values())


# The clock: elapsed time, or the calling thread's CPU time (--clock cpu).
CLOCK = [time.perf_counter]


def time_inference(model, x, precision, device, repeats=3):
    """Seconds per forward pass, averaged over ``repeats`` passes (one pass
    of a small model is too short to time alone) after one untimed pass:
    a forward right after a training step runs on the caches and freed
    memory the step left (the first took up to 1.2x the time of the next
    ones, X3D-XS on a 2-core CPU). :func:`main` also times the inferences
    of a round after all its train steps."""
    model.eval()
    with torch.no_grad(), torch.autocast(
            device.split(':')[0], dtype=precision,
            enabled=precision != torch.float32):
        model(x)
        sync(device)
        start = CLOCK[0]()
        for _ in range(repeats):
            model(x)
        sync(device)
    return (CLOCK[0]() - start) / repeats


def peak_train_memory(arch, name, batch, device):
    """Peak memory (MiB) of one fp32 training step of configuration
    ``name``, measured in this (fresh) process."""
    frames, size = clip_of(arch)
    theirs, ours = build_pair(arch)
    model = model_variants(theirs, ours, device)[name].train()
    del theirs, ours
    x = torch.randn(batch, 3, frames, size, size, device=device)
    y = torch.randint(0, 400, (batch, ), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        time_train_step(model, x, y, optimizer, torch.float32, device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    # Linux: writing 5 to clear_refs resets the peak resident set (VmHWM)
    # to the current one, so building the models does not count.
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    base = _status_kib('VmRSS')
    time_train_step(model, x, y, optimizer, torch.float32, device)
    return (_status_kib('VmHWM') - base) / 1024


def _status_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'no {field} in /proc/self/status')


def memory_column(arch, names, batch, device):
    """name -> peak MiB, each measured by a child process."""
    out = {}
    for name in names:
        if name in INFERENCE_ONLY or 'compile' in name:
            continue
        proc = subprocess.run(
            [sys.executable, __file__, '--memory-child', arch, name,
             str(batch), device],
            capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f'memory run {arch} {name!r} failed:\n'
                             f'{proc.stderr[-2000:]}')
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', nargs='+', default=['xs', 'm'],
                        choices=stock_archs())
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch\'s)')
    parser.add_argument('--clock', choices=['wall', 'cpu'], default='wall',
                        help='wall: elapsed time; cpu: the CPU time of the '
                        'calling thread (CPU device and --threads 1 only; '
                        'not inflated by other processes taking the cores)')
    parser.add_argument('--precision', nargs='+', default=['fp32'],
                        choices=['fp32', 'bf16', 'fp16'])
    parser.add_argument('--compile', action='store_true',
                        help='add torch.compile configurations')
    parser.add_argument('--configs', nargs='+', metavar='NAME',
                        help='time only these configurations (names as in '
                        'the table; default: all). Without "%s" the '
                        '"vs MMAction2" columns are empty' % BASELINE)
    parser.add_argument('--infer-only', nargs='+', default=[],
                        metavar='NAME', help='configurations whose train '
                        'step is not timed (e.g. a PyTorch channelwise '
                        'backward that takes minutes in bf16)')
    parser.add_argument('--memory-batch', type=int, default=0,
                        help='measure peak training memory at this batch')
    parser.add_argument('--memory-child', nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keep_freed_memory()  # as tools/train.py does
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == 'cpu':
        if args.device != 'cpu' or torch.get_num_threads() != 1:
            sys.exit('--clock cpu times one CPU thread: add --threads 1')
        CLOCK[0] = time.thread_time
    if args.memory_child:
        arch, name, batch, device = args.memory_child
        print(json.dumps(peak_train_memory(arch, name, int(batch), device)))
        return None
    dtypes = dict(fp32=torch.float32, bf16=torch.bfloat16,
                  fp16=torch.float16)
    torch.manual_seed(0)
    where = (torch.cuda.get_device_name() if 'cuda' in args.device else
             describe_machine())
    print(f'device: {args.device} ({where}); batch {args.batch}, '
          f'{args.rounds} rounds after {args.warmup} warm-up, median, '
          f'{args.clock} clock')
    rows, memory = [], {}
    for arch in args.archs:
        frames, size = clip_of(arch)
        theirs, ours = build_pair(arch)
        models = model_variants(theirs, ours, args.device, args.compile)
        x = torch.randn(args.batch, 3, frames, size, size,
                        device=args.device)
        y = torch.randint(0, 400, (args.batch, ), device=args.device)
        diff = check_outputs(models, x)
        print(f'X3D-{arch.upper()}: outputs agree, max abs diff {diff:.1e}',
              flush=True)
        if args.configs:
            unknown = sorted(set(args.configs + args.infer_only) -
                             set(models))
            if unknown:
                sys.exit(f'unknown configuration(s) {unknown}; the names '
                         f'are {sorted(models)}')
            models = {n: m for n, m in models.items() if n in args.configs}
        no_train = set(INFERENCE_ONLY) | set(args.infer_only)
        for precision in args.precision:
            dtype = dtypes[precision]
            optims = {
                n: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
                for n, m in models.items()
            }
            train = {n: [] for n in models}
            infer = {n: [] for n in models}
            for r in range(args.warmup + args.rounds):
                # The train steps, then the inferences (an inference timed
                # right after a train step ran slower: see time_inference),
                # every other round in reverse order, so that no
                # configuration always follows the same neighbour.
                order = list(models.items())
                order = order[::-1] if r % 2 else order
                for name, model in order:
                    if name in no_train:
                        continue
                    start = CLOCK[0]()
                    time_train_step(model, x, y, optims[name], dtype,
                                    args.device)
                    if r >= args.warmup:
                        train[name].append(CLOCK[0]() - start)
                for name, model in order:
                    i = time_inference(model, x, dtype, args.device)
                    if r >= args.warmup:
                        infer[name].append(i)
            base_t = (statistics.median(train[BASELINE])
                      if train.get(BASELINE) else None)
            base_i = (statistics.median(infer[BASELINE])
                      if BASELINE in infer else None)
            for name in models:
                i = statistics.median(infer[name])
                t = statistics.median(train[name]) if train[name] else None
                rows.append((arch, f'X3D-{arch.upper()} {frames}x{size}²',
                             name, precision, t and args.batch / t,
                             t and base_t and base_t / t, args.batch / i,
                             base_i and base_i / i))
        if args.memory_batch:
            memory[arch] = memory_column(arch, models, args.memory_batch,
                                         args.device)
    mem_head = (f' | peak train memory, batch {args.memory_batch} (MiB)'
                if args.memory_batch else '')
    print()
    print('| model | implementation | precision | train clips/s | train vs '
          f'MMAction2 | inference clips/s | inference vs MMAction2{mem_head} '
          '|')
    print('| --- ' * (8 if args.memory_batch else 7) + '|')
    for arch, model, name, precision, tc, tr, ic, ir in rows:
        train_cells = (f'{tc:.2f} | ' + (f'{tr:.2f}x' if tr else '-')
                       if tc is not None else '- | -')
        infer_ratio = f'{ir:.2f}x' if ir else '-'
        mem = ''
        if args.memory_batch:
            value = memory[arch].get(name) if precision == 'fp32' else None
            mem = f' | {value:.0f}' if value is not None else ' | -'
        print(f'| {model} | {name} | {precision} | {train_cells} | '
              f'{ic:.2f} | {infer_ratio}{mem} |')
    return rows


if __name__ == '__main__':
    main()
