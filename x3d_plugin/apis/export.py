"""The deployable form of an X3D recognizer, its export to TorchScript, ONNX
and OpenVINO IR, and int8 post-training quantization.

The deployable form (:func:`deployable_network`) is the recognizer's
backbone and head as one ``forward(clips) -> logits`` over normalised
``N x 3 x T x H x W`` clips, in eval mode, with every BN folded into the
convolution before it, contiguous memory and PyTorch's own convolutions
(the channelwise operator of :mod:`x3d_plugin.ops` records a standard
``conv3d`` when traced): every exporter sees standard operators only; swish
is ``Sigmoid`` and ``Mul``. OpenVINO IR is converted from the ONNX graph.
Softmax and the averaging of the test views stay with the caller
(:class:`x3d_plugin.apis.engines.EngineRecognizer`).

The batch dimension of every exported file is dynamic; the clip length and
crop size are fixed at export.
"""
import copy
import os
import os.path as osp
import tempfile
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from x3d_plugin.models import fuse_conv_bn

from .inference import InferenceError

FORMATS = ('torchscript', 'onnx', 'openvino')
SUFFIXES = {'.xml': 'openvino', '.onnx': 'onnx', '.ts': 'torchscript',
            '.pt': 'torchscript'}
DEPLOY_EXTRA = 'pip install -e ".[deploy]"'


class MissingEngineError(ImportError, InferenceError):
    """An export format or runtime whose package is not installed (an
    :class:`InferenceError` too, so the tools report it in one line)."""


def require(package: str, purpose: str):
    """Import ``package`` or raise :class:`MissingEngineError` naming the
    extra that installs it.

    Args:
        package (str): Module to import (``openvino``, ``onnxruntime``...).
        purpose (str): What needs it, for the message.
    """
    import importlib
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise MissingEngineError(
            f'{purpose} needs the {package} package, which is not '
            f'installed: {DEPLOY_EXTRA} (or pip install -r '
            'requirements/deploy.txt)') from err


class DeployableX3D(nn.Module):
    """Backbone + head of a recognizer as one ``forward(clips) -> logits``.

    Args:
        backbone (nn.Module): The X3D backbone.
        cls_head (nn.Module): Its classification head.
    """

    def __init__(self, backbone: nn.Module, cls_head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.cls_head = cls_head

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.cls_head(self.backbone(clips))


def deployable_network(recognizer: nn.Module) -> DeployableX3D:
    """The deployable form of ``recognizer`` (a copy; the recognizer is
    left as it is): eval mode, BN folded, contiguous memory.

    Args:
        recognizer (nn.Module): An MMAction2 recognizer with the plugin's
            X3D backbone and head (e.g. from
            :func:`x3d_plugin.apis.init_recognizer`).
    """
    net = DeployableX3D(copy.deepcopy(recognizer.backbone),
                        copy.deepcopy(recognizer.cls_head)).eval()
    # Memory layout is the runtime's business, and the ONNX exporter
    # cannot express a memory-format change.
    net.backbone.channels_last = False
    net.to(memory_format=torch.contiguous_format)
    return fuse_conv_bn(net)


def relative_error(got, expected) -> float:
    """Largest absolute difference between two logit arrays, relative to
    the largest absolute value of ``expected``."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise ValueError(f'shapes differ: {got.shape} vs {expected.shape}')
    return float(np.abs(got - expected).max() /
                 max(np.abs(expected).max(), 1e-12))


def format_of(path: str, fmt: Optional[str] = None) -> str:
    """The export format of ``path``: ``fmt`` when given, else read from
    the suffix (``.xml`` OpenVINO IR, ``.onnx``, else TorchScript)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f'unknown format {fmt!r}; one of {FORMATS}')
        return fmt
    return SUFFIXES.get(osp.splitext(path)[1].lower(), 'torchscript')


def write_torchscript(net: nn.Module, example: torch.Tensor,
                      path: str) -> None:
    """Trace ``net`` on ``example`` and save it to ``path``."""
    with torch.no_grad():
        scripted = torch.jit.trace(net, example)
    scripted.save(path)


def write_onnx(net: nn.Module, example: torch.Tensor, path: str,
               opset: int = 17) -> None:
    """Export ``net`` to ONNX (input ``clips``, output ``logits``, dynamic
    batch) with the TorchScript-based exporter."""
    require('onnx', 'ONNX export')
    torch.onnx.export(net, (example, ), path, opset_version=opset,
                      input_names=['clips'], output_names=['logits'],
                      dynamic_axes={'clips': {0: 'batch'},
                                    'logits': {0: 'batch'}},
                      dynamo=False)


def openvino_model(net: nn.Module, example: torch.Tensor, opset: int = 17):
    """``net`` converted to an in-memory OpenVINO model (dynamic batch),
    through ONNX: the ONNX graph of :func:`write_onnx` read by OpenVINO's
    ONNX frontend (one exporter for both formats, and about twice as fast
    as OpenVINO's PyTorch frontend on X3D)."""
    ov = require('openvino', 'OpenVINO conversion')
    with tempfile.TemporaryDirectory() as tmp_dir:
        path = osp.join(tmp_dir, 'model.onnx')
        write_onnx(net, example, path, opset)
        model = ov.convert_model(path)
    return model


def save_openvino(model, path: str) -> None:
    """Save an OpenVINO model as IR (``path`` .xml, weights in the .bin
    beside it) with float32 weights: OpenVINO's default compression of the
    weights to FP16 moves X3D-XS's logits by about 4e-4 of the largest,
    above the 1e-4 the export checks."""
    ov = require('openvino', 'OpenVINO export')
    ov.save_model(model, path, compress_to_fp16=False)


def write_openvino(net: nn.Module, example: torch.Tensor, path: str,
                   opset: int = 17) -> None:
    """Convert ``net`` to OpenVINO IR at ``path`` (float32 weights)."""
    save_openvino(openvino_model(net, example, opset), path)


def _move_file(src: str, dst: str, fmt: str) -> None:
    os.replace(src, dst)
    if fmt == 'openvino':
        os.replace(osp.splitext(src)[0] + '.bin',
                   osp.splitext(dst)[0] + '.bin')


def _write(net, example, path, fmt, opset):
    if fmt == 'torchscript':
        write_torchscript(net, example, path)
    elif fmt == 'onnx':
        write_onnx(net, example, path, opset)
    else:
        write_openvino(net, example, path, opset)


def export_checked(net: nn.Module,
                   example: torch.Tensor,
                   path: str,
                   fmt: str,
                   opset: int = 17,
                   tolerance: float = 1e-4,
                   check: Optional[Callable[[str], np.ndarray]] = None
                   ) -> float:
    """Export ``net`` in ``fmt``, run the file on ``example`` and write
    ``path`` only if its logits agree with PyTorch's within ``tolerance``
    (relative to the largest logit).

    Args:
        net (nn.Module): The deployable network (:func:`deployable_network`).
        example (Tensor): A clip batch of the input shape.
        path (str): Where the file goes (OpenVINO: the .xml; the .bin is
            written beside it).
        fmt (str): ``torchscript``, ``onnx`` or ``openvino``.
        opset (int): ONNX opset.
        tolerance (float): Largest accepted difference, relative to the
            largest logit.
        check (callable, optional): Runs the written temporary file on
            ``example``; defaults to the float32 engine of the format.

    Returns:
        float: The relative difference to PyTorch's logits.

    Raises:
        RuntimeError: when the exported model differs by more than
            ``tolerance`` (nothing is written).
    """
    with torch.no_grad():
        expected = net(example).numpy()
    out_dir = osp.dirname(osp.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp_dir:
        tmp = osp.join(tmp_dir, 'model' + osp.splitext(path)[1])
        _write(net, example, tmp, fmt, opset)
        if check is None:
            from .engines import load_engine
            engine = load_engine(tmp, {'torchscript': 'pytorch',
                                       'onnx': 'onnxruntime',
                                       'openvino': 'openvino'}[fmt])
            got = engine(example.numpy())
        else:
            got = check(tmp)
        diff = relative_error(got, expected)
        if not diff <= tolerance:
            raise RuntimeError(
                f'the {fmt} model differs from PyTorch by {diff:.2e} of the '
                f'largest logit (> {tolerance}); nothing written')
        _move_file(tmp, path, fmt)
    return diff


def calibration_clips(cfg, recognizer: nn.Module, num: int,
                      split: str = 'train') -> List[np.ndarray]:
    """``num`` normalised clips ``1 x 3 x T x H x W`` for int8
    calibration: videos of the config's ``{split}_dataloader`` dataset (the
    user's own training videos by default), spread evenly over its list,
    through the config's test pipeline, one test view per video (the
    views taken in turn) and the recognizer's data preprocessor.

    Args:
        cfg (Config): The model's config.
        recognizer (nn.Module): Its recognizer (for the data preprocessor).
        num (int): Number of clips.
        split (str): Which dataloader's dataset the videos come from.
    """
    from mmaction.registry import DATASETS
    loader = cfg.get(f'{split}_dataloader')
    dataset_cfg = copy.deepcopy((loader or {}).get('dataset'))
    if not dataset_cfg or 'ann_file' not in dataset_cfg:
        raise ValueError(
            f'calibration reads the videos of {split}_dataloader.dataset, '
            'which this config does not have as a plain dataset with an '
            'ann_file')
    dataset_cfg['pipeline'] = cfg.test_pipeline
    dataset_cfg['test_mode'] = True
    dataset = DATASETS.build(dataset_cfg)
    if len(dataset) == 0:
        raise ValueError(f'{dataset_cfg["ann_file"]} lists no videos')
    picks = np.linspace(0, len(dataset), num, endpoint=False).astype(int)
    clips = []
    preprocessor = recognizer.data_preprocessor
    for i, index in enumerate(picks):
        data = dataset[int(index)]
        with torch.no_grad():
            inputs = preprocessor(dict(inputs=[data['inputs']],
                                       data_samples=[data['data_samples']]),
                                  False)['inputs']
        views = inputs.reshape((-1, ) + tuple(inputs.shape[2:]))
        clips.append(views[i % len(views)][None].float().contiguous()
                     .numpy())
    return clips


def quantize_openvino(model, clips: Sequence[np.ndarray], path: str) -> None:
    """Quantize an OpenVINO model to int8 with NNCF's post-training
    quantization calibrated on ``clips``, and save it as IR at ``path``.

    Args:
        model: The float32 OpenVINO model (:func:`openvino_model`).
        clips: Normalised calibration clips.
        path (str): The IR's .xml.
    """
    nncf = require('nncf', 'int8 quantization for OpenVINO')
    quantized = nncf.quantize(model, nncf.Dataset(list(clips)),
                              subset_size=len(clips))
    save_openvino(quantized, path)


def quantize_onnx(float_path: str, clips: Sequence[np.ndarray],
                  path: str) -> None:
    """Quantize an ONNX model to int8 with ONNX Runtime's static
    quantization (QDQ, per-channel int8 weights, uint8 activations, MinMax
    ranges) calibrated on ``clips``.

    Args:
        float_path (str): The float32 ONNX file.
        clips: Normalised calibration clips.
        path (str): Where the int8 ONNX file goes.
    """
    require('onnxruntime', 'int8 quantization for ONNX')
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ONNX Runtime's recommended pre-processing: shapes inferred and the
    # graph optimised (the exporter's Identity nodes for parameters of
    # equal value removed), so every bias is a constant it can quantize.
    prepared = osp.splitext(path)[0] + '.prepared.onnx'
    quant_pre_process(float_path, prepared)

    class Reader(CalibrationDataReader):

        def __init__(self):
            self._items = iter(list(clips))

        def get_next(self):
            clip = next(self._items, None)
            return None if clip is None else {'clips': clip}

    quantize_static(prepared, path, Reader(),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    os.remove(prepared)


def export_int8(net: nn.Module, example: torch.Tensor, path: str, fmt: str,
                clips: Sequence[np.ndarray],
                opset: int = 17) -> Tuple[float, float]:
    """Export ``net`` as an int8 model calibrated on ``clips``: NNCF for
    OpenVINO IR, ONNX Runtime's static quantization for ONNX.

    Returns:
        tuple[float, float]: over the calibration clips, the share whose
        top-1 class is the float32 network's, and the largest difference
        of the logits relative to the largest float32 logit.
    """
    if fmt not in ('openvino', 'onnx'):
        raise ValueError(f'int8 export writes openvino or onnx, not {fmt!r}')
    out_dir = osp.dirname(osp.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp_dir:
        tmp = osp.join(tmp_dir, 'model' + osp.splitext(path)[1])
        if fmt == 'openvino':
            quantize_openvino(openvino_model(net, example, opset), clips,
                              tmp)
        else:
            float_path = osp.join(tmp_dir, 'float.onnx')
            write_onnx(net, example, float_path, opset)
            quantize_onnx(float_path, clips, tmp)
        from .engines import load_engine
        engine = load_engine(tmp, 'openvino' if fmt == 'openvino' else
                             'onnxruntime')
        batch = np.concatenate(list(clips))
        with torch.no_grad():
            expected = net(torch.from_numpy(batch)).numpy()
        got = np.concatenate([engine(clip) for clip in clips])
        if not np.isfinite(got).all():
            raise RuntimeError('the int8 model gives non-finite logits; '
                               'nothing written')
        agree = float((got.argmax(1) == expected.argmax(1)).mean())
        diff = relative_error(got, expected)
        del engine
        _move_file(tmp, path, fmt)
    return agree, diff
