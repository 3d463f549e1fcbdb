"""Parameters and FLOPs of X3D the way the paper counts them.

FLOPs are multiply-adds of convolution and linear layers (the X3D paper,
PySlowFast's ``misc.get_model_stats``), counted per stage, beside MMEngine's
``FlopAnalyzer`` count of every operator, for one clip and for the config's
test views.

Examples::

    python tools/analysis/complexity.py configs/x3d_m_k400.py
    python tools/analysis/complexity.py --arch l --shape 16 312 312
    python tools/analysis/complexity.py --all     # the paper's table beside ours
"""
import argparse
from pathlib import Path

import torch

from x3d_plugin.models import VARIANTS, build_x3d_recognizer
from x3d_plugin.models.complexity import (count_parameters, paper_flops,
                                          stage_flops, views_of_test_pipeline)

ROOT = Path(__file__).resolve().parents[2]


def from_config(path):
    """Model, one test view's input shape and the number of test views."""
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules()
    cfg = Config.fromfile(path)
    model = MODELS.build(cfg.model)
    found = views_of_test_pipeline(cfg.test_pipeline)
    if found is None:
        raise SystemExit(f'{path}: cannot read clip length and crop size '
                         'from test_pipeline; use --arch and --shape')
    return (model, *found)


def mmengine_flops(model, shape):
    from mmengine.analysis import FlopAnalyzer

    class Forward(torch.nn.Module):

        def __init__(self, recognizer):
            super().__init__()
            self.recognizer = recognizer

        def forward(self, x):
            return self.recognizer.cls_head(self.recognizer.backbone(x))

    analyzer = FlopAnalyzer(Forward(model).eval(), (torch.zeros(shape), ))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer.total()


def forward_recognizer(model, x):
    return model.cls_head(model.backbone(x))


def report(model, shape, views=1, with_mmengine=True, title=''):
    counts = paper_flops(model, shape, forward=forward_recognizer)
    params = count_parameters(model)
    print(f'== {title} input {tuple(shape[1:])}, {views} test view(s)')
    print(f'{"part":<10}{"GFLOPs (paper count)":>22}')
    for stage, value in stage_flops(counts).items():
        print(f'{stage:<10}{value / 1e9:>22.4f}')
    print(f'{"total":<10}{counts["total"] / 1e9:>22.4f}')
    print(f'params: {params:,} ({params / 1e6:.2f} M)')
    if views > 1:
        print(f'test, {views} views: {counts["total"] * views / 1e9:.2f} '
              'GFLOPs per video')
    if with_mmengine:
        full = mmengine_flops(model, shape)
        print(f'MMEngine FlopAnalyzer (all operators): {full / 1e9:.4f} '
              'GFLOPs')
    print()
    return params, counts['total']


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', help='a model config')
    parser.add_argument('--arch', choices=list(VARIANTS), help='X3D variant')
    parser.add_argument('--shape', type=int, nargs=3,
                        metavar=('FRAMES', 'HEIGHT', 'WIDTH'),
                        help='one clip (default: the variant\'s own)')
    parser.add_argument('--all', action='store_true',
                        help='every variant config beside the paper')
    parser.add_argument('--no-mmengine', action='store_true',
                        help='skip MMEngine\'s count (it runs a forward)')
    args = parser.parse_args(argv)
    with_mm = not args.no_mmengine
    if args.all:
        rows = []
        for arch in VARIANTS:
            model, shape, views = from_config(
                str(ROOT / 'configs' / f'x3d_{arch}_k400.py'))
            train_shape = (1, 3, *VARIANTS[arch].train_input)
            params, flops = report(model, train_shape, 1, False,
                                   f'X3D-{arch.upper()}')
            rows.append((arch, params, flops, views,
                         paper_flops(model, shape,
                                     forward=forward_recognizer)['total']))
        print('| variant | input | params (M), paper | params (M), ours | '
              'GFLOPs, paper | GFLOPs, ours | test views | GFLOPs x views (test crop) |')
        print('| --- | --- | --- | --- | --- | --- | --- | --- |')
        for arch, params, flops, views, view_flops in rows:
            variant = VARIANTS[arch]
            t, s = variant.num_frames, variant.train_crop
            print(f'| X3D-{arch.upper()} | {t}x{s}² | '
                  f'{variant.paper_params_m} | {params / 1e6:.2f} | '
                  f'{variant.paper_gflops:.2f} | '
                  f'{flops / 1e9:.2f} | {views} | '
                  f'{view_flops * views / 1e9:.1f} |')
        return rows
    if args.config:
        model, shape, views = from_config(args.config)
        if args.shape:
            shape = (1, 3, *args.shape)
        return report(model, shape, views, with_mm, args.config)
    if args.arch:
        shape = (1, 3, *(args.shape or VARIANTS[args.arch].train_input))
        return report(build_x3d_recognizer(args.arch), shape, 1, with_mm,
                      f'X3D-{args.arch.upper()}')
    parser.error('give a config, --arch or --all')


if __name__ == '__main__':
    main()
