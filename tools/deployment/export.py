"""Export a trained X3D recognizer (backbone + head, eval mode, BN folded)
to OpenVINO IR, ONNX or TorchScript, in float32 or int8.

A float32 export is run on the same input as the PyTorch model and must
agree within ``--tolerance`` (1e-4 of the largest logit) before the file is
written. ``--int8`` quantizes after training, calibrated on ``--calibrate``
clips of the config's training videos through its test pipeline: NNCF for
OpenVINO IR, ONNX Runtime's static quantization for ONNX; it prints how
often the int8 model's top-1 class is the float32 model's on those clips.

Examples::

    python tools/deployment/export.py configs/x3d_m_k400.py x3d_m.pth x3d_m.xml
    python tools/deployment/export.py configs/x3d_m_k400.py x3d_m.pth \\
        x3d_m_int8.xml --int8 --calibrate 300
    python tools/deployment/export.py configs/x3d_m_k400.py x3d_m.pth \\
        x3d_m.onnx --opset 17
    python tools/deployment/export.py configs/x3d_m_k400.py x3d_m.pth \\
        x3d_m.ts --format torchscript --shape 1 3 16 224 224

The format follows the suffix (``.xml`` OpenVINO IR with its ``.bin``,
``.onnx``, else TorchScript) unless ``--format`` names it. The input is
``N x 3 x T x H x W`` normalised clips (the batch is dynamic; T, H, W are
one view of the config's test pipeline unless ``--shape`` sets them), the
output the logits of each clip; softmax and the averaging of views stay
with the caller (``tools/test.py --engine``, ``tools/infer.py --engine``).
OpenVINO and int8 need ``pip install -e ".[deploy]"``.
"""
import argparse
import sys

import torch

from x3d_plugin.apis import InferenceError, init_recognizer
from x3d_plugin.apis.engines import view_shape
from x3d_plugin.apis.export import (FORMATS, deployable_network,
                                    calibration_clips, export_checked,
                                    export_int8, format_of)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='.xml (OpenVINO IR), .onnx or a '
                        'TorchScript file')
    parser.add_argument('--format', choices=FORMATS,
                        help='default: from the suffix of OUT')
    parser.add_argument('--shape', type=int, nargs=5,
                        metavar=('N', 'C', 'T', 'H', 'W'),
                        help='example input shape (default: 1 view of the '
                        'config\'s test clip); the batch stays dynamic')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest accepted difference to PyTorch, '
                        'relative to the largest logit (float32)')
    parser.add_argument('--int8', action='store_true',
                        help='quantize to int8 (openvino or onnx)')
    parser.add_argument('--calibrate', type=int, default=300, metavar='N',
                        help='with --int8: calibration clips from the '
                        'training videos (default 300)')
    parser.add_argument('--calibrate-split', default='train',
                        choices=['train', 'val', 'test'],
                        help='whose dataloader\'s videos calibrate')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    fmt = format_of(args.out, args.format)
    if args.int8 and fmt == 'torchscript':
        sys.exit('error: --int8 writes OpenVINO IR (.xml) or ONNX (.onnx)')
    if args.calibrate < 1:
        sys.exit('error: --calibrate needs at least 1 clip')
    try:
        recognizer = init_recognizer(args.config, args.checkpoint)
        shape = args.shape or (1, ) + view_shape(recognizer.cfg)
        net = deployable_network(recognizer)
        # Contiguous example: the exported graph then takes plain NCTHW.
        example = torch.randn(*shape)
        if args.int8:
            clips = calibration_clips(recognizer.cfg, recognizer,
                                      args.calibrate, args.calibrate_split)
            if clips[0].shape[1:] != tuple(shape[1:]):
                sys.exit(f'error: the test pipeline gives clips of '
                         f'{clips[0].shape[1:]}, not --shape {shape[1:]}')
            agree, diff = export_int8(net, example, args.out, fmt, clips,
                                      args.opset)
        else:
            diff = export_checked(net, example, args.out, fmt, args.opset,
                                  args.tolerance)
    except (InferenceError, RuntimeError, ValueError) as err:
        sys.exit(f'error: {err}')
    extra = f', opset {args.opset}' if fmt == 'onnx' else ''
    with torch.no_grad():
        out_shape = tuple(net(example).shape)
    print(f'{args.out}: {fmt}{extra}, {"int8" if args.int8 else "float32"}, '
          f'input (N, {", ".join(map(str, shape[1:]))}) float32 NCTHW '
          f'(normalised), output logits (N, {out_shape[1]})')
    if args.int8:
        print(f'int8 vs float32 on the {len(clips)} calibration clips: '
              f'same top-1 on {100 * agree:.1f}%, largest logit difference '
              f'{diff:.2e} of the largest logit (measure accuracy with '
              'tools/test.py --engine)')
    else:
        print(f'difference to PyTorch: {diff:.2e} of the largest logit')


if __name__ == '__main__':
    main()
