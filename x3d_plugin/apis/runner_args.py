"""The command-line arguments that ``tools/train.py`` and ``tools/test.py``
share (MMAction2's names), and how they change a config."""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction


def runner_parser(description: str, work_dir_help: str,
                  cfg_example: str) -> argparse.ArgumentParser:
    """A parser with the config path, ``--work-dir``, ``--cfg-options``,
    ``--launcher`` and ``--local-rank``; tools add their own arguments."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help=work_dir_help)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help=f'override config entries, e.g. {cfg_example}')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_runner_args(parser: argparse.ArgumentParser, argv=None):
    """Parse ``argv``; the local rank also goes to ``LOCAL_RANK`` (as
    ``torch.distributed.launch`` passes it)."""
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def apply_runner_args(cfg, args):
    """Launcher, work directory (``--work-dir``, else the config's, else
    ``work_dirs/<config name>``) and ``--cfg-options`` into ``cfg``."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg
