"""Export a trained X3D recognizer (backbone + head, eval mode, fixed input
shape) to TorchScript or ONNX. The exported model is run on the same input
as the PyTorch model and must agree within ``--atol`` (1e-4) before the file
is written.

Examples::

    python tools/deployment/export.py configs/x3d_m_k400.py x3d_m.pth \\
        x3d_m.ts --format torchscript --shape 1 3 16 224 224
    python tools/deployment/export.py configs/x3d_m_k400.py x3d_m.pth \\
        x3d_m.onnx --format onnx --opset 17

The output is the class scores (logits) of one view; softmax and the
averaging of views stay with the caller. ONNX needs ``pip install onnx
onnxruntime``.
"""
import argparse
import sys

import torch
from torch import nn

from x3d_plugin.apis import InferenceError, init_recognizer
from x3d_plugin.models.complexity import views_of_test_pipeline


class ExportableX3D(nn.Module):
    """Backbone + head of a recognizer as one ``forward(clips) -> logits``
    over ``N x 3 x T x H x W`` normalised clips."""

    def __init__(self, recognizer: nn.Module) -> None:
        super().__init__()
        self.backbone = recognizer.backbone
        self.cls_head = recognizer.cls_head
        # Memory layout is the runtime's business in TorchScript/ONNX, and
        # the ONNX exporter cannot express a memory-format change.
        self.backbone.channels_last = False
        self.backbone.to(memory_format=torch.contiguous_format)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.cls_head(self.backbone(clips))


def export(model, example, path, fmt, opset=17, atol=1e-4):
    """Export ``model`` for ``example``; check, then write ``path``.

    Returns:
        float: the largest absolute difference to PyTorch's output.
    """
    with torch.no_grad():
        expected = model(example)
    tmp = path + '.tmp'
    if fmt == 'torchscript':
        with torch.no_grad():
            scripted = torch.jit.trace(model, example)
        scripted.save(tmp)
        with torch.no_grad():
            got = torch.jit.load(tmp)(example)
    elif fmt == 'onnx':
        try:
            import onnxruntime
        except ImportError as err:
            raise SystemExit('ONNX export needs: pip install onnx '
                             'onnxruntime') from err
        torch.onnx.export(model, (example, ), tmp, opset_version=opset,
                          input_names=['clips'], output_names=['logits'],
                          dynamo=False)
        session = onnxruntime.InferenceSession(
            tmp, providers=['CPUExecutionProvider'])
        got = torch.from_numpy(
            session.run(None, {'clips': example.numpy()})[0])
    else:
        raise ValueError(f'unknown format {fmt!r}')
    diff = (got - expected).abs().max().item()
    if diff > atol:
        import os
        os.remove(tmp)
        raise RuntimeError(f'the {fmt} model differs from PyTorch by {diff:.2e}'
                           f' (> {atol}); nothing written')
    import os
    os.replace(tmp, path)
    return diff


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out')
    parser.add_argument('--format', choices=['torchscript', 'onnx'],
                        default='torchscript')
    parser.add_argument('--shape', type=int, nargs=5,
                        metavar=('N', 'C', 'T', 'H', 'W'),
                        help='input shape (default: 1 view of the config\'s '
                        'test clip)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--atol', type=float, default=1e-4)
    args = parser.parse_args(argv)
    try:
        recognizer = init_recognizer(args.config, args.checkpoint)
    except InferenceError as err:
        sys.exit(f'error: {err}')
    shape = args.shape or _test_shape(recognizer.cfg)
    model = ExportableX3D(recognizer).eval()
    # Contiguous example: the exported graph then takes plain NCTHW input.
    example = torch.randn(*shape)
    diff = export(model, example, args.out, args.format, args.opset,
                  args.atol)
    extra = f', opset {args.opset}' if args.format == 'onnx' else ''
    print(f'{args.out}: {args.format}{extra}, input {tuple(shape)} float32 '
          f'NCTHW (normalised), output logits {tuple(model(example).shape)}; '
          f'max abs difference to PyTorch {diff:.2e}')


def _test_shape(cfg):
    found = views_of_test_pipeline(cfg.test_pipeline)
    if found is None:
        raise SystemExit('give --shape: the test pipeline has no clip '
                         'length or crop size')
    return found[0]


if __name__ == '__main__':
    main()
