"""X3D's progressive network expansion (paper section 3.2): from a tiny
network, expand one axis per step (frame rate, clip length, resolution,
depth, width, bottleneck), train every candidate briefly, keep the best,
and contract the last step onto a target complexity.

The config is an ordinary training config (data, pipelines, the short
proxy schedule every candidate trains with) plus an ``expansion`` section;
see ``configs/expand/x3d_expand_demo.py``. Each candidate trains as its own
``tools/train.py`` run under ``WORK_DIR/candidates/<id>``; the search state
(``WORK_DIR/search_state.json``) is written after each candidate, so the
same command run again continues where a killed search stopped. SIGTERM
stops it cleanly (the running candidates are resumed next time).

Examples::

    python tools/expand.py configs/expand/x3d_expand_demo.py \\
        --work-dir work_dirs/expand_demo
    python tools/expand.py my_expand.py --target-gflops 2.0 \\
        --launcher ray --gpus-per-candidate 1
"""
import argparse
import os
import os.path as osp
import time
from pathlib import Path

import x3d_plugin  # noqa: F401  (stack shims before MMEngine runs)
from mmengine.config import Config, DictAction

from x3d_plugin.apis.expansion import (AXES, ExpansionConfigError, Job,
                                       Limits, LocalLauncher, Point,
                                       RayLauncher, Search, SearchError,
                                       SearchState, Settings, complexity,
                                       point_config, x2d)
from x3d_plugin.apis.expansion.configs import (PYSLOWFAST_JITTER,
                                               PYSLOWFAST_TEST,
                                               num_classes_of,
                                               train_list_videos)
from x3d_plugin.apis.expansion.launchers import stop_on_sigterm
from x3d_plugin.apis.expansion.report import write_all
from x3d_plugin.apis.expansion.search import SearchInterrupted, elapsed

TRAIN_SCRIPT = str(Path(__file__).resolve().parent / 'train.py')
# Frames of the shortest video decide how long a clip can be; so many
# training videos are opened to find it.
PROBE_VIDEOS = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='training config with an '
                        '"expansion" section')
    parser.add_argument('--work-dir', help='where the search and every '
                        'candidate write (default: work_dirs/<config>)')
    parser.add_argument('--target-gflops', type=float,
                        help='target C(X), GFLOPs per training clip')
    parser.add_argument('--steps', type=int, help='number of expansion '
                        'steps (without a target, or as a cap)')
    parser.add_argument('--axes', nargs='+', choices=AXES,
                        help='axes that may grow (default: the config\'s, '
                        'else all six)')
    parser.add_argument('--launcher', choices=['local', 'ray'],
                        default='local', help='run candidates as local '
                        'processes or as Ray tasks')
    parser.add_argument('--ray-address', default='auto',
                        help='Ray cluster to join ("auto": the running '
                        'one; "local": start one on this machine)')
    parser.add_argument('--parallel', type=int, help='candidates at once '
                        '(local; default: CPU cores, or GPUs / '
                        '--gpus-per-candidate)')
    parser.add_argument('--threads-per-candidate', type=int,
                        help='CPU threads of each candidate (default: '
                        'cores / parallel)')
    parser.add_argument('--gpus-per-candidate', type=int, default=0,
                        help='GPUs each candidate trains on (0: CPU; '
                        'more than 1: torchrun)')
    parser.add_argument('--seed', type=int, help='seed of every candidate '
                        '(default: the config\'s randomness.seed)')
    parser.add_argument('--retry-failed', action='store_true',
                        help='run candidates that failed before again')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, flush=True)


def shortest_video(cfg) -> int:
    """Frames of the shortest of the first training videos."""
    import av
    shortest = None
    for index, path in enumerate(train_list_videos(cfg)):
        if index == PROBE_VIDEOS:
            break
        try:
            with av.open(path) as container:
                stream = container.streams.video[0]
                frames = stream.frames or sum(
                    1 for _ in container.decode(stream))
        except (OSError, IndexError, av.error.FFmpegError) as err:
            raise SystemExit(
                f'cannot read training video {path} to find the clip length '
                f'limit ({err}); set expansion.max_clip_span in the config')
        shortest = frames if shortest is None else min(shortest, frames)
    if shortest is None:
        raise SystemExit('the training list is empty; set '
                         'expansion.max_clip_span or fix the data')
    return shortest


def start_point(spec, cfg) -> Point:
    if spec in (None, 'x2d'):
        sampler = next(s for s in cfg.train_dataloader.dataset.pipeline
                       if 'frame_interval' in s)
        return x2d(int(sampler['frame_interval']))
    return Point.from_dict(dict(spec))


def settings_from(cfg, args):
    section = cfg.get('expansion')
    if section is None:
        raise SystemExit(
            f'{args.config} has no "expansion" section; start from '
            'configs/expand/x3d_expand_demo.py, which documents it')
    axes = args.axes or list(section.get('axes', AXES))
    fixed = list(section.get('fixed_axes', []))
    axes = [a for a in axes if a not in fixed]
    max_span = section.get('max_clip_span')
    if max_span is None:
        max_span = shortest_video(cfg)
        log(f'clip length limit: {max_span} frames (shortest of the first '
            f'{PROBE_VIDEOS} training videos)')
    return Settings(
        start=start_point(section.get('start'), cfg),
        axes=axes,
        target_gflops=(args.target_gflops if args.target_gflops is not None
                       else section.get('target_gflops')),
        max_steps=args.steps if args.steps is not None else section.get(
            'steps'),
        limits=Limits(max_clip_span=max_span,
                      max_crop=section.get('max_crop')),
        num_classes=num_classes_of(cfg),
        criterion=section.get('criterion', 'top1'),
        tolerance=section.get('tolerance', 0.05)), fixed


def main(argv=None):
    args = parse_args(argv)
    began = time.time()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    work_dir = args.work_dir or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    os.makedirs(work_dir, exist_ok=True)
    try:
        settings, fixed = settings_from(cfg, args)
    except ValueError as err:
        raise SystemExit(f'{args.config}: {err}')
    section = cfg.expansion
    sizes = dict(jitter_ratio=section.get('jitter_ratio', PYSLOWFAST_JITTER),
                 test_ratio=section.get('test_ratio', PYSLOWFAST_TEST))
    if fixed:
        log(f'fixed axes (left out): {", ".join(fixed)}')

    cpus = len(os.sched_getaffinity(0))
    gpus = args.gpus_per_candidate
    if args.launcher == 'local':
        if gpus:
            import torch
            parallel = args.parallel or max(1, torch.cuda.device_count() //
                                            gpus)
        else:
            parallel = args.parallel or min(cpus, len(settings.axes))
        threads = args.threads_per_candidate or max(1, cpus // parallel)
        launcher = LocalLauncher(parallel, gpus)
        log(f'local launcher: {parallel} candidate(s) at once, {threads} '
            f'thread(s) each' + (f', {gpus} GPU(s) each' if gpus else ''))
    else:
        threads = args.threads_per_candidate or 1
        launcher = RayLauncher(args.ray_address, gpus, num_cpus=cpus)
        log(f'Ray launcher: each candidate reserves {threads} CPU(s)' +
            (f' and {gpus} GPU(s)' if gpus else ''))

    def make_job(cid: str, point: Point) -> Job:
        folder = osp.abspath(osp.join(work_dir, 'candidates', cid))
        os.makedirs(folder, exist_ok=True)
        config = osp.join(folder, 'config.py')
        point_config(cfg, point, **sizes).dump(config)
        return Job(cid=cid, point=point.to_dict(), config=config,
                   work_dir=folder, train_script=TRAIN_SCRIPT,
                   threads=threads, gpus=gpus,
                   evaluate=section.get('evaluate'), seed=args.seed)

    try:
        # The pipelines are checked before any training.
        point_config(cfg, settings.start, **sizes)
        search = Search(settings,
                        SearchState(osp.join(work_dir, 'search_state.json')),
                        make_job, launcher,
                        lambda p: complexity(p, settings.num_classes), log,
                        retry_failed=args.retry_failed)
        stop_on_sigterm()
        summary = search.run()
    except SearchInterrupted as err:
        log(f'expansion search interrupted: {err}')
        return None
    except (SearchError, ExpansionConfigError) as err:
        raise SystemExit(f'expansion search: {err}')
    outputs = write_all(summary, work_dir)
    final = Point.from_dict(summary['final']['point'])
    final_cfg = point_config(cfg, final, **sizes,
                             options=section.get('final_options'))
    outputs['config'] = osp.join(work_dir, 'final_config.py')
    final_cfg.dump(outputs['config'])
    _prepend(outputs['config'], [
        f'# X3D found by tools/expand.py {args.config}: '
        f'{final.describe()},',
        f'# {summary["final"]["gflops"]:.4f} GFLOPs per training clip, '
        f'J={summary["final"]["J"]:.2f} after the proxy schedule.',
        '# Train it: python tools/train.py ' + outputs['config']
    ])
    start = summary['start']
    log('')
    log('path: ' + ' -> '.join(
        f'{r["cid"]} ({r["gflops"]:.3f} GFLOPs, J={r["J"]:.1f})'
        for r in summary['path']))
    log(f'final: {final.describe()}, {summary["final"]["gflops"]:.4f} '
        f'GFLOPs, J={summary["final"]["J"]:.2f} (start: '
        f'J={start["J"]:.2f})')
    failed = [r for r in summary['candidates'].values() if 'J' not in r]
    for record in failed:
        log(f'failed: {record["cid"]}: {record["error"].splitlines()[0]}')
    for name, path in outputs.items():
        log(f'{name:>7}: {path}')
    log(f'time: {elapsed(began)}')
    return summary


def _prepend(path, lines):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n' + text)


if __name__ == '__main__':
    main()
