"""Seconds per training iteration through MMEngine's runner: data-loader
workers reading real videos, the model's train step, the optimizer; ours
(the X3D config's pipeline and model) against the stock equivalent
(MMAction2's DecordInit/SampleFrames/DecordDecode/RandomRescale pipeline
and its X3D + X3DHead).

Each run is a fresh process training for ``--iters`` iterations on the
list (SGD, the variant's clip size and crop, random weights); the first
``--skip`` iterations are left out and the table shows the median time per
iteration and the median time the loop waited for data.

Example (the table in docs/benchmarks.md)::

    python tools/benchmark/train_speed.py --data-root DATA --arch xs \\
        --batch 4 --workers 2 \\
        --iters 30 --reencoded work_dirs/bench_reencoded_320
"""
import argparse
import json
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from x3d_plugin.apis.benchmark import (describe_machine, stock_archs,
                                       stock_train_pipeline)
from x3d_plugin.models.converters.mmaction2 import mmaction2_recognizer_cfg
from x3d_plugin.utils.malloc import keep_freed_memory

ROOT = Path(__file__).resolve().parents[2]


def build_cfg(kind, arch, data_root, ann_file, args, work_dir):
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs' / f'x3d_{arch}_k400.py'))
    if kind == 'stock':
        cfg.model = dict(
            mmaction2_recognizer_cfg(arch, 2, average_clips='prob'),
            data_preprocessor=cfg.model.data_preprocessor)
        pipeline = stock_train_pipeline(cfg)
        dataset = dict(type='VideoDataset')
    else:
        cfg.model.cls_head.num_classes = 2
        pipeline = cfg.train_pipeline
        dataset = dict(type='x3d_plugin.CheckedVideoDataset', num_classes=2)
    cfg.train_dataloader = dict(
        batch_size=args.batch,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dict(dataset, ann_file=str(ann_file),
                     data_prefix=dict(video=str(data_root)),
                     pipeline=pipeline))
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.param_scheduler = []
    cfg.optim_wrapper = dict(
        optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-5))
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10)
    cfg.custom_hooks = [dict(type='x3d_plugin.SkippedVideosHook')]
    cfg.log_processor = dict(by_epoch=False)
    cfg.launcher = 'none'
    cfg.work_dir = work_dir
    return cfg


def child(kind, arch, data_root, ann_file, args):
    """Train in this process; print per-iteration times as JSON."""
    import x3d_plugin  # noqa: F401
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class Times(Hook):
        priority = 'VERY_HIGH'

        def __init__(self):
            self.last, self.iters, self.waits = None, [], []

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            now = time.perf_counter()
            if self.last is not None:
                self.waits.append(now - self.last)

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            now = time.perf_counter()
            if self.last is not None:
                self.iters.append(now - self.last)
            self.last = now

    with tempfile.TemporaryDirectory() as work_dir:
        cfg = build_cfg(kind, arch, data_root, ann_file, args, work_dir)
        runner = Runner.from_cfg(cfg)
        times = Times()
        runner.register_hook(times)
        runner.train()
    print(json.dumps(dict(iters=times.iters, waits=times.waits)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='xs', choices=stock_archs())
    parser.add_argument('--data-root', required=True,
                        help='a folder of videos with a train.txt list, '
                        'e.g. a Kinetics subset')
    parser.add_argument('--ann-file', default=None,
                        help='default: DATA_ROOT/train.txt')
    parser.add_argument('--reencoded', default=None,
                        help='a re-encoded copy (tools/data/'
                        'reencode_videos.py) to add a row for')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--skip', type=int, default=5)
    parser.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keep_freed_memory()  # as tools/train.py does
    if args.child:
        kind, data_root, ann_file = args.child
        return child(kind, args.arch, data_root, ann_file, args)
    ann = Path(args.ann_file or Path(args.data_root) / 'train.txt')
    if not ann.is_file():
        raise SystemExit(f'annotation list {ann} not found')
    runs = [('stock MMAction2 (pipeline + X3D)', 'stock', args.data_root,
             ann), ('ours (config pipeline + X3D)', 'ours', args.data_root,
                    ann)]
    if args.reencoded:
        copy = Path(args.reencoded) / ann.name
        if not copy.is_file():
            raise SystemExit(f'{copy} not found: run tools/data/'
                             'reencode_videos.py with --ann-files first')
        runs += [('stock MMAction2, re-encoded videos', 'stock',
                  args.reencoded, copy),
                 ('ours, re-encoded videos', 'ours', args.reencoded, copy)]
    results = {}
    for name, kind, data_root, ann_file in runs:
        print(f'running: {name} ...', flush=True)
        flags = [f'--arch={args.arch}', f'--batch={args.batch}',
                 f'--workers={args.workers}', f'--iters={args.iters}']
        proc = subprocess.run(
            [sys.executable, __file__, *flags, '--child', kind,
             str(data_root), str(ann_file)], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f'{name} failed:\n{proc.stderr[-3000:]}')
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name] = (statistics.median(out['iters'][args.skip:]),
                         statistics.median(out['waits'][args.skip:]))
    base = results[runs[0][0]][0]
    print(f'\n{describe_machine()}')
    print(f'X3D-{args.arch.upper()}, batch {args.batch}, '
          f'{args.workers} data workers, {args.iters} iterations '
          f'(median after {args.skip}), list {osp.basename(ann)}\n')
    print('| run | s/iter | waiting for data, s/iter | speed vs stock |')
    print('| --- | --- | --- | --- |')
    for name, (it, wait) in results.items():
        print(f'| {name} | {it:.3f} | {wait:.3f} | {base / it:.2f}x |')


if __name__ == '__main__':
    main()
