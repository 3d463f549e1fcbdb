"""The command-line arguments that ``tools/train.py`` and ``tools/test.py``
share (MMAction2's names), how they change a config, and how the tools
report the errors whose message says what to do."""
import argparse
import contextlib
import os
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.dist import get_rank, get_world_size

from x3d_plugin.utils.checkpoint_file import (CorruptCheckpointError,
                                              MissingCheckpointError)
from x3d_plugin.utils.fileio import CheckpointWriteError
from x3d_plugin.datasets import AnnotationError
from x3d_plugin.datasets.video_io import VideoDecodeError
from x3d_plugin.engine import NonFiniteLossError
from .config_check import ConfigError

# Each names the file, line, config key or iteration and the fix; a
# traceback adds nothing. (Config and annotation errors list one problem a
# line.)
ONE_LINE_ERRORS = (CheckpointWriteError, CorruptCheckpointError,
                   MissingCheckpointError, NonFiniteLossError, ConfigError,
                   AnnotationError, VideoDecodeError)


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


def build_runner(cfg):
    """The runner the config names in ``runner_type`` (the plugin's configs:
    ``x3d_plugin.X3DRunner``), else MMEngine's ``Runner``, as MMAction2's
    tools build it."""
    if 'runner_type' in cfg:
        from mmaction.registry import RUNNERS
        return RUNNERS.build(cfg)
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)


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


@contextlib.contextmanager
def errors_as_one_line():
    """Inside this block, an error of :data:`ONE_LINE_ERRORS` ends the
    process with ``error: MESSAGE`` on stderr and exit status 1 instead of a
    traceback (each process of a distributed run says which it is)."""
    try:
        yield
    except ONE_LINE_ERRORS as err:
        where = f'[rank {get_rank()}] ' if get_world_size() > 1 else ''
        print(f'{where}error: {err}', file=sys.stderr, flush=True)
        raise SystemExit(1) from None
