"""X3D's progressive network expansion (paper section 3.2): from a tiny
network, expand one axis per step (frame rate, clip length, resolution,
depth, width, bottleneck), train every candidate briefly, keep the best,
and contract the last step onto a target complexity.

The config is an ordinary training config (data, pipelines, the short
proxy schedule every candidate trains with) plus an ``expansion`` section;
see ``configs/expand/x3d_expand_demo.py``. Each candidate trains as its own
``tools/train.py`` run under ``WORK_DIR/candidates/<id>``; the search state
(``WORK_DIR/search_state.json``) is written after each candidate, so the
same command run again continues where a killed search stopped, provided
nothing that decides a candidate's J has changed (else it stops and says
what did). SIGTERM or Ctrl-C stops it cleanly (the running candidates are
resumed next time); a search killed outright takes its trainers with it.
Every J is measured on a part of the training list held out from the
candidates' training (``--val-ratio``), never on the config's test list.

Examples::

    python tools/expand.py configs/expand/x3d_expand_demo.py \\
        --work-dir work_dirs/expand_demo
    python tools/expand.py my_expand.py --target-gflops 2.0 \\
        --launcher ray --gpus-per-candidate 1
"""
import argparse
import copy
import fcntl
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
from x3d_plugin.apis.expansion.data import (DataError, file_sha256,
                                            read_list, shortest_video,
                                            split_held_out, write_lines)
from x3d_plugin.apis.expansion.launchers import stop_on_sigterm
from x3d_plugin.apis.expansion.report import write_all
from x3d_plugin.apis.expansion.search import (CRITERIA_HELP, PER_DOUBLING,
                                              SearchInterrupted, elapsed,
                                              fingerprint)

TRAIN_SCRIPT = str(Path(__file__).resolve().parent / 'train.py')
# Held out of the training list to measure J on, per class.
VAL_RATIO = 0.1
# The parts of the base config that make the proxy schedule (their own
# part of the fingerprint, so that a change is named as such).
SCHEDULE_KEYS = ('train_cfg', 'param_scheduler', 'optim_wrapper')


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
                        'and of the held-out split (default: the config\'s '
                        'randomness.seed)')
    parser.add_argument('--criterion', choices=['top1', PER_DOUBLING],
                        help='what a step keeps by (default: the config\'s '
                        'expansion.criterion, else top1). ' + CRITERIA_HELP +
                        '. The X3D paper expands one axis at a time by '
                        'about 2x computation and keeps the axis with the '
                        'best accuracy (its "computation/accuracy '
                        'trade-off" with the cost held about equal): top1')
    parser.add_argument('--val-ratio', type=float,
                        help='fraction of each class of the training list '
                        'held out to measure J on (seeded by --seed; '
                        f'default: expansion.val_ratio, else {VAL_RATIO}); '
                        "0: measure J on the config's val_dataloader, "
                        'which must not be its test list')
    parser.add_argument('--probe-videos', type=int,
                        help='find the clip-length limit from a random '
                        'sample of so many training videos (seeded) '
                        'instead of all of them (each is read from its '
                        'container header)')
    parser.add_argument('--reuse-results', action='store_true',
                        help='continue in a work directory whose search '
                        'had other settings, data or config, keeping its '
                        'candidates\' J (refused without this flag)')
    parser.add_argument('--retry-failed', action='store_true',
                        help='run candidates that failed before again')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, flush=True)


def clip_span_limit(cfg, args, seed: int) -> int:
    """Frames of the shortest training video (all of them, or the sample
    of --probe-videos), read from the container headers.

    Args:
        cfg: the base config.
        args: the command line (``probe_videos``).
        seed: the sample's seed.
    """
    began = time.time()
    frames, read = shortest_video(list(train_list_videos(cfg)),
                                  args.probe_videos, seed)
    which = (f'a random sample of {read}' if args.probe_videos else
             f'all {read}')
    log(f'clip length limit: {frames} frames (the shortest of {which} '
        f'training videos, {time.time() - began:.1f} s)')
    return frames


def held_out_config(cfg, work_dir: str, ratio: float, seed: int):
    """The config the candidates train with: the training list split into
    what they train on and what J is measured on (files written under
    ``WORK_DIR/data``), or, with ``ratio`` 0, the config as it is.

    Args:
        cfg: the base config.
        work_dir: the search's work directory.
        ratio: the held-out fraction of each class.
        seed: the split's seed.
    """
    train_set = cfg.train_dataloader.dataset
    if ratio == 0:
        val_file = cfg.val_dataloader.dataset.get('ann_file')
        if not val_file:
            raise DataError('--val-ratio 0 measures J on val_dataloader, '
                            'which names no ann_file; give a --val-ratio '
                            'above 0')
        test = cfg.get('test_dataloader')
        if test and osp.abspath(test.dataset.get('ann_file', '')) == \
                osp.abspath(val_file):
            raise DataError(
                f'--val-ratio 0 measures J on val_dataloader, whose list '
                f'{val_file} is also the test list: the network would be '
                'selected on the data it is tested on; give a --val-ratio '
                'above 0 or a validation list of its own')
        log(f'J is measured on {val_file} (--val-ratio 0)')
        return cfg
    lines = read_list(train_set.ann_file)
    train, held = split_held_out(lines, ratio, seed)
    folder = osp.abspath(osp.join(work_dir, 'data'))
    search_cfg = copy.deepcopy(cfg)
    search_cfg.train_dataloader.dataset.ann_file = write_lines(
        osp.join(folder, 'train_split.txt'), train)
    val_set = search_cfg.val_dataloader.dataset
    val_set.ann_file = write_lines(osp.join(folder, 'held_out.txt'), held)
    val_set.data_prefix = copy.deepcopy(train_set.get('data_prefix', {}))
    log(f'J is measured on {len(held)} of the {len(lines)} training videos '
        f'held out per class (--val-ratio {ratio:g}, seed {seed}): '
        f'{val_set.ann_file}; candidates train on the other {len(train)}')
    return search_cfg


def search_fingerprint(cfg, settings, sizes, section, seed: int,
                       ratio: float) -> dict:
    """Everything that decides a candidate's J or the path: the settings,
    criterion, target, tolerance, seed, proxy schedule, the rest of the
    base config, the lists' contents, the held-out split and the trainer.
    The number of steps is not part of it (a search can be extended), nor
    are the launcher and the threads per candidate.

    Args:
        cfg: the base config (with --cfg-options applied).
        settings: the search's :class:`Settings`.
        sizes: the scale jitter and test size ratios.
        section: the config's ``expansion`` section.
        seed: the seed of the candidates and of the held-out split.
        ratio: the held-out fraction (0: the config's validation list).
    """
    content = {k: v for k, v in cfg.to_dict().items() if k != 'expansion'}
    schedule = {k: content.pop(k, None) for k in SCHEDULE_KEYS}
    parts = {
        'start, axes and limits': dict(
            start=settings.start.to_dict(), axes=list(settings.axes),
            limits=vars(settings.limits), num_classes=settings.num_classes,
            sizes=sizes),
        'criterion': settings.criterion,
        'target_gflops': settings.target_gflops,
        'tolerance': settings.tolerance,
        'seed': seed,
        'proxy schedule': schedule,
        'base config': content,
        'training list': file_sha256(cfg.train_dataloader.dataset.ann_file),
        'held-out ratio': ratio,
        'trainer': dict(evaluate=section.get('evaluate'),
                        train_script=section.get('train_script')),
    }
    if ratio == 0:
        parts['validation list'] = file_sha256(
            cfg.val_dataloader.dataset.ann_file)
    return fingerprint(parts)


def lock_work_dir(work_dir: str):
    """Hold ``WORK_DIR/search.lock`` for this process's life: one search
    per work directory.

    Args:
        work_dir: the search's work directory.
    """
    path = osp.join(work_dir, 'search.lock')
    handle = open(path, 'a+', encoding='utf-8')
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        raise SystemExit(
            f'another search (process {handle.read().strip() or "?"}) runs '
            f'in {work_dir}; wait for it, stop it, or give another '
            '--work-dir') from None
    handle.truncate(0)
    handle.write(f'{os.getpid()}\n')
    handle.flush()
    return handle


def start_point(spec, cfg) -> Point:
    if spec in (None, 'x2d'):
        sampler = next(s for s in cfg.train_dataloader.dataset.pipeline
                       if 'frame_interval' in s)
        return x2d(int(sampler['frame_interval']))
    return Point.from_dict(dict(spec))


def settings_from(cfg, args, seed: int):
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
        max_span = clip_span_limit(cfg, args, seed)
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
        criterion=args.criterion or section.get('criterion', 'top1'),
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
    work_lock = lock_work_dir(work_dir)  # noqa: F841  (held until exit)
    seed = args.seed if args.seed is not None else int(
        cfg.get('randomness', {}).get('seed') or 0)
    try:
        settings, fixed = settings_from(cfg, args, seed)
        section = cfg.expansion
        ratio = (args.val_ratio if args.val_ratio is not None else
                 float(section.get('val_ratio', VAL_RATIO)))
        search_cfg = held_out_config(cfg, work_dir, ratio, seed)
        sizes = dict(
            jitter_ratio=section.get('jitter_ratio', PYSLOWFAST_JITTER),
            test_ratio=section.get('test_ratio', PYSLOWFAST_TEST))
        fingerprint = search_fingerprint(cfg, settings, sizes, section,
                                         seed, ratio)
    except (ValueError, OSError) as err:  # DataError is a ValueError
        raise SystemExit(f'{args.config}: {err}')
    train_script = section.get('train_script') or TRAIN_SCRIPT
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
        point_config(search_cfg, point, **sizes).dump(config)
        return Job(cid=cid, point=point.to_dict(), config=config,
                   work_dir=folder, train_script=train_script,
                   threads=threads, gpus=gpus,
                   evaluate=section.get('evaluate'), seed=args.seed)

    try:
        # The pipelines are checked before any training.
        point_config(search_cfg, settings.start, **sizes)
        state = SearchState(osp.join(work_dir, 'search_state.json'),
                            fingerprint, reuse_results=args.reuse_results)
        if state.reused:
            log(f'--reuse-results: keeping the J of {len(state.candidates)}'
                f' candidate(s) although {"; ".join(state.reused)} changed')
        search = Search(settings, state, make_job, launcher,
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
    if summary['target'] is not None:
        log(f'target: {summary["target"]["note"]}')
    return summary


def _prepend(path, lines):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n' + text)


if __name__ == '__main__':
    main()
