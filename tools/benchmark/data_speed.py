"""Data-path speed: clips/s of one data-loader worker for the X3D-M training
recipe (16 frames x 5, short-side jitter 256-320, crop 224, flip), our
pipeline against MMAction2's stock one, on real videos, with and without
offline re-encoding (``tools/data/reencode_videos.py``).

Every pipeline reads every video of the list once per round; pipelines are
alternated within a round and the table shows the median over rounds. One
process, one decoder thread, OpenCV single-threaded: what one worker does.
A second table splits the time per clip by step (decode, resize, crop,
flip, format, collate).

Example (the tables in docs/benchmarks.md)::

    python tools/benchmark/data_speed.py --data-root DATA --rounds 3
"""
import argparse
import collections
import os.path as osp
import random
import statistics
import time
from pathlib import Path

import numpy as np

from x3d_plugin.apis.benchmark import describe_machine, stock_train_pipeline

ROOT = Path(__file__).resolve().parents[2]


def m_config():
    from mmengine.config import Config
    return Config.fromfile(str(ROOT / 'configs' / 'x3d_m_k400.py'))


def stock():
    """MMAction2's stock pipeline with the X3D-M recipe."""
    return stock_train_pipeline(m_config())


def ours(loader='pyav', sampler='slowfast'):
    """The training pipeline of configs/x3d_m_k400.py (its loader swapped
    for decord's with ``loader='decord'``; MMAction2's ``SampleFrames`` in
    place of PySlowFast's sampling with ``sampler='stock'``, which reads
    the same frames as the stock pipeline: 80 frames of the file rather
    than 80 frames at 30 fps)."""
    swap = {
        'x3d_plugin.PyAVInitAtScale': 'x3d_plugin.DecordInitAtScale',
        'x3d_plugin.PyAVSparseDecode': 'x3d_plugin.RobustDecordDecode'
    }
    steps = []
    for step in m_config().train_pipeline:
        step = dict(step)
        if loader == 'decord':
            step['type'] = swap.get(step['type'], step['type'])
        if (sampler == 'stock'
                and step['type'] == 'x3d_plugin.SlowFastSampleFrames'):
            step = dict(stock()[1])
        steps.append(step)
    return steps


def build(steps):
    from mmaction.registry import TRANSFORMS
    return [TRANSFORMS.build(dict(step)) for step in steps]


def read_list(ann_file, data_root):
    with open(ann_file) as f:
        return [
            osp.join(data_root,
                     line.rsplit(maxsplit=1)[0]) for line in f if line.strip()
        ]


def run_pipeline(transforms, files, per_step, seed):
    """Pass every file through the transforms; seconds in total."""
    random.seed(seed)
    np.random.seed(seed)
    start = time.perf_counter()
    for filename in files:
        results = dict(filename=filename, label=0, start_index=0,
                       modality='RGB')
        for t in transforms:
            tic = time.perf_counter()
            results = t(results)
            per_step[type(t).__name__] += time.perf_counter() - tic
            if results is None:
                raise SystemExit(f'{filename}: {type(t).__name__} failed')
    return time.perf_counter() - start


def collate_seconds(transforms, files, batch=8):
    """Seconds per clip to collate a batch and run the data preprocessor
    (stack, float, normalise): the remaining work before the model."""
    from mmaction.registry import MODELS
    from mmengine.dataset import pseudo_collate
    samples = []
    for filename in files[:batch]:
        results = dict(filename=filename, label=0, start_index=0,
                       modality='RGB')
        for t in transforms:
            results = t(results)
        samples.append(results)
    pre = MODELS.build(
        dict(type='ActionDataPreprocessor',
             mean=[114.75, 114.75, 114.75],
             std=[57.375, 57.375, 57.375],
             format_shape='NCTHW'))
    times = []
    for _ in range(3):
        tic = time.perf_counter()
        pre(pseudo_collate(samples), training=True)
        times.append(time.perf_counter() - tic)
    return statistics.median(times) / len(samples)


def ensure_reencoded(data_root, ann_file, out_dir):
    """Re-encode the list's videos (resumable; nothing to do if done)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'reencode_videos', ROOT / 'tools' / 'data' / 'reencode_videos.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reencode = module.main
    print(f're-encoding into {out_dir} (skipped where done) ...')
    tic = time.perf_counter()
    status = reencode([
        str(data_root), str(out_dir), '--ann-files',
        str(ann_file), '--short-side', '320', '--keyint', '16'
    ])
    if status:
        raise SystemExit('re-encoding failed; see the report above')
    return time.perf_counter() - tic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data-root', required=True,
                        help='a folder of videos with a train.txt list, '
                        'e.g. a Kinetics subset')
    parser.add_argument('--ann-file', default=None,
                        help='list relative to --data-root; default: '
                        'DATA_ROOT/train.txt')
    parser.add_argument('--reencoded', default=str(
        ROOT / 'work_dirs' / 'bench_reencoded_320'),
                        help='folder for the re-encoded copy')
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args(argv)
    import cv2
    cv2.setNumThreads(1)
    from mmaction.utils import register_all_modules
    register_all_modules(init_default_scope=False)

    data_root = Path(args.data_root)
    ann_file = Path(args.ann_file or data_root / 'train.txt')
    if not ann_file.is_file():
        raise SystemExit(f'annotation list {ann_file} not found (set '
                         '--data-root / --ann-file)')
    reencode_s = ensure_reencoded(data_root, ann_file, args.reencoded)
    original = read_list(ann_file, data_root)
    reencoded = read_list(
        Path(args.reencoded) / ann_file.name, args.reencoded)
    stock_steps = stock()
    configs = {
        'stock MMAction2, original videos': (stock_steps, original),
        'ours, decord at target size, original videos':
        (ours('decord'), original),
        'ours (config default), original videos': (ours(), original),
        'ours, stock SampleFrames, original videos':
        (ours(sampler='stock'), original),
        'stock MMAction2, re-encoded 320p': (stock_steps, reencoded),
        'ours (config default), re-encoded 320p': (ours(), reencoded),
    }
    pipelines = {name: build(steps) for name, (steps, _) in configs.items()}
    totals = {name: [] for name in configs}
    steps = {name: collections.Counter() for name in configs}
    for r in range(args.rounds + 1):  # round 0 warms the file cache
        for name, (_, files) in configs.items():
            per_step = collections.Counter()
            seconds = run_pipeline(pipelines[name], files, per_step, seed=r)
            if r:
                totals[name].append(seconds)
                steps[name].update(per_step)
    base = statistics.median(totals['stock MMAction2, original videos'])
    print(f'\n{describe_machine()}')
    print(f'{len(original)} videos of {ann_file}, {args.rounds} rounds '
          f'(median), 1 worker, 1 decoder thread; re-encoding took '
          f'{reencode_s:.0f} s here (0 if already done)\n')
    print('| pipeline | clips/s per worker | vs stock |')
    print('| --- | --- | --- |')
    for name in configs:
        seconds = statistics.median(totals[name])
        print(f'| {name} | {len(original) / seconds:.2f} | '
              f'{base / seconds:.2f}x |')
    print('\nMilliseconds per clip by step (mean over rounds):\n')
    print('| pipeline | step | ms per clip |')
    print('| --- | --- | --- |')
    for name, (_, files) in configs.items():
        n = len(files) * args.rounds
        for step, seconds in steps[name].items():
            print(f'| {name} | {step} | {1000 * seconds / n:.1f} |')
        collate = collate_seconds(pipelines[name], files)
        print(f'| {name} | collate + data preprocessor (batch 8) | '
              f'{1000 * collate:.1f} |')


if __name__ == '__main__':
    main()
