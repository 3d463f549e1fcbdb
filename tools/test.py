"""Test a checkpoint with the config's test views (MMAction2's flags).

Example::

    python tools/test.py configs/x3d_m_k400.py x3d_m_k400.pth --dump out.pkl
    python tools/test.py configs/x3d_m_k400.py x3d_m.xml --engine openvino

A wrong config, a damaged checkpoint or a video that cannot be decoded ends
the run with one line, ``error: ...``, naming it and the fix (exit 1).
"""
import json
import os.path as osp

import x3d_plugin  # noqa: F401  (stack shims before MMEngine runs)
from mmengine.config import Config

from x3d_plugin.apis import InferenceError
from x3d_plugin.apis.config_check import check_config
from x3d_plugin.apis.engines import add_engine_arguments, view_shape
from x3d_plugin.apis.runner_args import (apply_runner_args, build_runner,
                                         errors_as_one_line,
                                         parse_runner_args, runner_parser)
from x3d_plugin.datasets.video_dataset import worker_errors_unwrapped
from x3d_plugin.utils.malloc import keep_freed_memory


def parse_args(argv=None):
    parser = runner_parser('Test an X3D recognizer', 'where the test log goes',
                           'test_dataloader.batch_size=1')
    parser.add_argument('checkpoint', help='checkpoint file; with --engine '
                        'also a model file from tools/deployment/export.py')
    parser.add_argument(
        '--dump',
        help='write per-video predictions (scores, labels) to this .pkl')
    parser.add_argument(
        '--fuse-conv-bn',
        action='store_true',
        help='fold BN into the convolutions before testing (same scores, '
        'faster)')
    add_engine_arguments(parser)
    return parse_runner_args(parser, argv)


def merge_args(cfg, args):
    if args.dump is not None:
        if not args.dump.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--dump must name a .pkl file, got {args.dump}')
        dump = dict(type='DumpResults', out_file_path=args.dump)
        evaluators = cfg.test_evaluator
        cfg.test_evaluator = (list(evaluators) if isinstance(
            evaluators, (list, tuple)) else [evaluators]) + [dump]
    if args.fuse_conv_bn:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='x3d_plugin.FuseConvBNHook')
        ]
    apply_runner_args(cfg, args)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint!r} does not exist')
    cfg.load_from = args.checkpoint
    return cfg


def use_engine(cfg, args):
    """The config's model on ``args.engine`` (checked config first: the
    engine's model keeps the recognizer's parts that testing uses)."""
    if args.fuse_conv_bn:
        raise SystemExit('--fuse-conv-bn is for the PyTorch recognizer; '
                         'an exported model has BN folded already')
    cfg.model = dict(type='x3d_plugin.EngineRecognizer', recognizer=cfg.model,
                     model_file=args.checkpoint, engine=args.engine,
                     precision=args.precision,
                     clip_shape=view_shape(cfg))
    cfg.load_from = None
    return cfg


def main(argv=None):
    args = parse_args(argv)
    # Large tensors are freed and allocated again every step: keep the
    # memory in the process (x3d_plugin/utils/malloc.py).
    keep_freed_memory()
    cfg = merge_args(Config.fromfile(args.config), args)
    with errors_as_one_line(), worker_errors_unwrapped():
        # Before the runner: a wrong config stops here, with every problem
        # listed and no work directory made.
        check_config(cfg, mode='test')
        try:
            if args.engine:
                cfg = use_engine(cfg, args)
            runner = build_runner(cfg)
            metrics = runner.test()
        except InferenceError as err:  # a model file or engine
            raise SystemExit(f'error: {err}') from None
    if runner.rank == 0:
        print('Test result: ' + json.dumps(
            {k: round(float(v), 4) for k, v in metrics.items()}), flush=True)
    return metrics


if __name__ == '__main__':
    main()
