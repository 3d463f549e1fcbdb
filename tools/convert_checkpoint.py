"""Convert an X3D checkpoint of PySlowFast, PyTorchVideo or MMAction2 to the
x3d_plugin layout, loadable with ``load_from=`` or
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.

Example::

    python tools/convert_checkpoint.py x3d_m.pyth x3d_m_k400.pth \\
        --from slowfast --config configs/x3d_m_k400.py
"""
import argparse
import sys

import torch

from x3d_plugin.utils.checkpoint_file import load_local_checkpoint
from x3d_plugin.models.checkpoint import extract_state_dict
from x3d_plugin.models.converters import (FORMATS, ConversionError,
                                          convert_state_dict)
from x3d_plugin.models.variants import (UnknownArchError, get_variant,
                                        variants_with_structure)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument(
        '--from',
        dest='source',
        required=True,
        choices=sorted(FORMATS),
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
    family = '/'.join(variants_with_structure(result['structure']))
    if isinstance(expected_arch, str):
        try:
            expected = get_variant(expected_arch).structure
        except UnknownArchError as err:
            sys.exit(f'error: {args.config}: {err}')
        if expected != result['structure']:
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
