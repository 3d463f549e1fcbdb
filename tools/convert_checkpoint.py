"""Convert an X3D checkpoint of PySlowFast, PyTorchVideo or MMAction2 to the
x3d_plugin layout, loadable with ``load_from=`` or
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.

Example::

    python tools/convert_checkpoint.py x3d_m.pyth x3d_m_k400.pth \\
        --from slowfast --config configs/x3d_m_k400.py
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from x3d_plugin.compat import load_local_checkpoint  # noqa: E402
from x3d_plugin.utils.convert import (TABLES, ConversionError,  # noqa: E402
                                      convert_state_dict, extract_state_dict)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument(
        '--from',
        dest='source',
        required=True,
        choices=sorted(TABLES),
        help='layout of the source checkpoint')
    parser.add_argument(
        '--config',
        help='config the result is for: its arch and num_classes are checked')
    parser.add_argument(
        '--drop-classifier',
        action='store_true',
        help='leave out the classifier to fine-tune on another label set')
    return parser.parse_args(argv)


def _config_expectations(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    arch = cfg.model.backbone.get('arch', 'm')
    return arch, cfg.model.cls_head.num_classes


def main(argv=None):
    args = parse_args(argv)
    expected_arch = num_classes = None
    if args.config:
        expected_arch, num_classes = _config_expectations(args.config)
    try:
        state = extract_state_dict(load_local_checkpoint(args.src, 'cpu'))
        result = convert_state_dict(
            state,
            args.source,
            drop_classifier=args.drop_classifier,
            num_classes=num_classes)
    except (ConversionError, FileNotFoundError, RuntimeError) as err:
        sys.exit(f'error: cannot convert {args.src}: {err}')
    family = 'xs/s/m' if result['arch'] == 'm' else result['arch']
    if expected_arch is not None and isinstance(expected_arch, str):
        if result['arch'] != ('m' if expected_arch in ('xs', 's') else
                              expected_arch):
            sys.exit(f'error: {args.src} is an X3D-{family.upper()} network '
                     f'but {args.config} builds arch={expected_arch!r}')
    torch.save(
        dict(
            state_dict=result['state_dict'],
            meta=dict(
                converted_from=args.source,
                source_file=str(args.src),
                arch=result['arch'],
                num_classes=result['num_classes'])), args.dst)
    print(f'{args.src} ({args.source}) -> {args.dst}')
    print(f'  variant: X3D-{family.upper()}, classes: '
          f"{result['num_classes']}, tensors mapped: {result['mapped']}, "
          f"written: {len(result['state_dict'])}")
    for note in result['notes']:
        print(f'  note: {note}')


if __name__ == '__main__':
    main()
