"""Train an X3D recognizer with MMEngine's runner (MMAction2's flags).

Examples::

    python tools/train.py configs/x3d_xs_demo.py
    python tools/train.py configs/x3d_m_k400.py --work-dir work_dirs/m --amp
    bash tools/dist_train.sh configs/x3d_m_k400.py 8

A wrong config (every problem listed), a damaged or missing checkpoint, a
full disk, a NaN loss or a bad annotation list ends the run with one line,
``error: ...``, naming the file, key or iteration and the fix, and exit
status 1. On SIGTERM (SLURM preemption or time limit, ``kill``) training
saves ``iter_N.pth`` after the current iteration and exits with status 0;
``--resume`` continues from it (docs/fault_tolerance.md).
"""
import x3d_plugin  # noqa: F401  (stack shims before MMEngine runs)
from mmengine.config import Config

from x3d_plugin.apis.config_check import check_config
from x3d_plugin.apis.runner_args import (apply_runner_args, build_runner,
                                         errors_as_one_line,
                                         parse_runner_args, runner_parser)
from x3d_plugin.datasets.video_dataset import worker_errors_unwrapped
from x3d_plugin.utils.malloc import keep_freed_memory


def parse_args(argv=None):
    parser = runner_parser('Train an X3D recognizer',
                           'where logs and checkpoints go',
                           'train_dataloader.batch_size=8')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or without a path from the latest '
        'checkpoint in the work directory (none there: start from scratch)')
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the LR to the actual total batch (on by default in the '
        'Kinetics configs)')
    parser.add_argument('--seed', type=int, default=None, help='random seed')
    parser.add_argument(
        '--diff-rank-seed',
        action='store_true',
        help='a different seed on each rank')
    parser.add_argument(
        '--deterministic',
        action='store_true',
        help='deterministic cuDNN algorithms')
    return parse_runner_args(parser, argv)


def merge_args(cfg, args):
    """Apply the command line to the config."""
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise SystemExit(f'--amp needs OptimWrapper, the config uses '
                             f'{wrapper}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        if not _cuda_available():
            # CPU autocast runs in bfloat16, which needs no loss scaling.
            cfg.optim_wrapper.dtype = 'bfloat16'
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    if cfg.get('randomness') is None or args.seed is not None:
        cfg.randomness = dict(
            seed=args.seed if args.seed is not None else
            cfg.get('randomness', {}).get('seed'),
            diff_rank_seed=args.diff_rank_seed,
            deterministic=args.deterministic)
    return apply_runner_args(cfg, args)


def _cuda_available():
    import torch
    return torch.cuda.is_available()


def main(argv=None):
    args = parse_args(argv)
    # Large tensors are freed and allocated again every step: keep the
    # memory in the process (x3d_plugin/utils/malloc.py).
    keep_freed_memory()
    cfg = merge_args(Config.fromfile(args.config), args)
    with errors_as_one_line(), worker_errors_unwrapped():
        # Before the runner: a wrong config stops here, with every problem
        # listed and no work directory made.
        check_config(cfg, mode='train')
        runner = build_runner(cfg)
        runner.train()
    if runner.rank == 0:
        print(f'Training finished. Checkpoints and logs: {runner.work_dir}',
              flush=True)


if __name__ == '__main__':
    main()
