"""Run an X3D model on a CPU engine: PyTorch, ONNX Runtime or OpenVINO.

An engine maps normalised clips ``N x 3 x T x H x W`` (numpy float32) to
logits ``N x num_classes``. :func:`load_engine` opens a model file:

* an OpenVINO IR (``.xml`` with its ``.bin``; float32 or int8 from
  ``tools/deployment/export.py``) runs on ``openvino``;
* an ONNX file (float32 or int8) on ``onnxruntime`` or ``openvino``;
* a TorchScript file on ``pytorch`` (or converted to ``openvino``);
* a training checkpoint (``.pth``) needs the config: it is loaded into the
  config's recognizer, BN is folded, and it runs on ``pytorch`` or is
  converted in memory for ``onnxruntime`` / ``openvino``
  (:func:`load_engine` with ``config``).

``auto`` picks the fastest installed float32 engine that can run the file:
OpenVINO when it is installed, else ONNX Runtime for an ONNX file or a
checkpoint, else PyTorch.

Precision is explicit: ``f32`` unless ``bf16`` is asked for (OpenVINO's
``INFERENCE_PRECISION_HINT``, which otherwise defaults to bf16 on CPUs with
AVX-512 BF16 or AMX; PyTorch's CPU autocast). An int8 file runs its
quantized layers in int8 whatever the precision.

:class:`EngineRecognizer` puts an engine in the place of a recognizer's
backbone and head, so the config's test pipeline, data preprocessor, view
averaging and metrics run as they do for the PyTorch model
(``tools/test.py --engine``, ``tools/infer.py --engine``).
"""
import os.path as osp
import zipfile
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from mmengine.model import BaseModel

from x3d_plugin.registry import MODELS

from .export import (DEPLOY_EXTRA, MissingEngineError, deployable_network,
                     require)
from .inference import InferenceError

ENGINES = ('pytorch', 'onnxruntime', 'openvino')
PRECISIONS = ('f32', 'bf16')

__all__ = [
    'ENGINES', 'PRECISIONS', 'Engine', 'EngineRecognizer',
    'add_engine_arguments',
    'MissingEngineError', 'ModelFileError', 'installed_engines',
    'load_engine', 'resolve_engine', 'DEPLOY_EXTRA'
]


def add_engine_arguments(parser) -> None:
    """``--engine`` and ``--precision``, as the tools that run a model
    (``tools/test.py``, ``tools/infer.py``, ``tools/stream.py``) take them."""
    parser.add_argument(
        '--engine',
        choices=ENGINES + ('auto', ),
        help='run backbone and head on this CPU engine (auto: the fastest '
        'installed float32 one), the checkpoint then being a checkpoint or '
        'a model file of tools/deployment/export.py (docs/deployment.md); '
        'default: the PyTorch recognizer')
    parser.add_argument('--precision', choices=PRECISIONS, default='f32',
                        help='with --engine: f32, or bf16 where the engine '
                        'and CPU have it')


class ModelFileError(InferenceError):
    """A model file that is missing, damaged or of a kind the engine cannot
    run."""


def installed_engines() -> Tuple[str, ...]:
    """The engines whose packages import, in :data:`ENGINES` order."""
    found = ['pytorch']
    for name in ('onnxruntime', 'openvino'):
        try:
            __import__(name)
        except ImportError:
            continue
        found.append(name)
    return tuple(found)


def file_kind(path: str) -> str:
    """What ``path`` holds: ``openvino`` (IR .xml), ``onnx``,
    ``torchscript`` or ``checkpoint``.

    Raises:
        ModelFileError: if it does not exist or is none of these.
    """
    if not osp.isfile(path):
        raise ModelFileError(f'model file {path!r} does not exist')
    suffix = osp.splitext(path)[1].lower()
    if suffix == '.xml':
        weights = osp.splitext(path)[0] + '.bin'
        if not osp.isfile(weights):
            raise ModelFileError(
                f'OpenVINO model {path!r} has no weights file {weights!r} '
                'beside it (export writes both)')
        return 'openvino'
    if suffix == '.onnx':
        return 'onnx'
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        # torch.jit.save writes the model's code into the archive;
        # torch.save (checkpoints) only data.
        if any('/code/' in n for n in names):
            return 'torchscript'
        return 'checkpoint'
    if suffix in ('.pth', '.pt', '.pyth', '.ckpt'):
        return 'checkpoint'  # legacy (non-zip) torch.save format
    raise ModelFileError(
        f'{path!r} is neither an OpenVINO IR (.xml), an ONNX file, a '
        'TorchScript file nor a checkpoint; export one with '
        'tools/deployment/export.py')


_RUNS = {
    'openvino': ('openvino', ),
    'onnx': ('onnxruntime', 'openvino'),
    'torchscript': ('pytorch', 'openvino'),
    'checkpoint': ('pytorch', 'onnxruntime', 'openvino'),
}


def resolve_engine(engine: str, path: str) -> str:
    """The engine that runs ``path``: ``engine`` itself, checked against
    the file's kind, or for ``auto`` the fastest installed float32 engine
    that runs it (OpenVINO, then ONNX Runtime, then PyTorch).

    Raises:
        InferenceError: for an unknown engine or one that cannot run the
            file.
        MissingEngineError: if the engine's package is not installed.
    """
    kind = file_kind(path)
    if engine == 'auto':
        installed = installed_engines()
        for name in ('openvino', 'onnxruntime', 'pytorch'):
            if name in _RUNS[kind] and name in installed:
                return name
        raise MissingEngineError(
            f'{path!r} ({kind}) runs on {" or ".join(_RUNS[kind])}, none of '
            f'which is installed: {DEPLOY_EXTRA}')
    if engine not in ENGINES:
        raise InferenceError(f'unknown engine {engine!r}; one of '
                         f'{ENGINES + ("auto", )}')
    if engine not in _RUNS[kind]:
        raise InferenceError(
            f'{path!r} is {"an" if kind[0] in "aeio" else "a"} {kind} file, '
            f'which runs on {" or ".join(_RUNS[kind])}, not {engine}')
    if engine != 'pytorch':
        require(engine, f'the {engine} engine')
    return engine


class Engine:
    """A model on one engine: ``engine(clips) -> logits`` (numpy).

    Attributes:
        name (str): ``pytorch``, ``onnxruntime`` or ``openvino``.
        precision (str): ``f32`` or ``bf16``.
        input_shape (tuple | None): The fixed ``(3, T, H, W)`` of one clip,
            when the file fixes it.
        path (str): The model file.
    """

    name = ''

    def __init__(self, path: str, precision: str = 'f32',
                 num_threads: Optional[int] = None) -> None:
        if precision not in PRECISIONS:
            raise InferenceError(f'unknown precision {precision!r}; one of '
                             f'{PRECISIONS}')
        self.path = path
        self.precision = precision
        self.num_threads = num_threads
        self.input_shape = None

    def run(self, clips: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, clips) -> np.ndarray:
        if isinstance(clips, torch.Tensor):
            clips = clips.detach().cpu().float().numpy()
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        if self.input_shape is not None and \
                tuple(clips.shape[1:]) != tuple(self.input_shape):
            raise InferenceError(
                f'{self.path} takes clips of {_shape(self.input_shape)} '
                f'(C x T x H x W), got {_shape(clips.shape[1:])}; export the '
                'model with the shape of the config\'s test view '
                '(tools/deployment/export.py --shape)')
        return self.run(clips)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({self.path!r}, '
                f'precision={self.precision!r})')


def _shape(shape) -> str:
    return 'x'.join(str(int(s)) for s in shape)


class PyTorchEngine(Engine):
    """A TorchScript file or a PyTorch module, bf16 through CPU autocast.

    Args:
        path (str): The TorchScript file (or a name for ``module``).
        precision (str): ``f32`` or ``bf16``.
        num_threads (int, optional): Sets ``torch.set_num_threads``.
        module (nn.Module, optional): Run this module instead of loading
            ``path``.
    """

    name = 'pytorch'

    def __init__(self, path, precision='f32', num_threads=None,
                 module=None) -> None:
        super().__init__(path, precision, num_threads)
        if num_threads:
            torch.set_num_threads(num_threads)
        if module is None:
            try:
                module = torch.jit.load(path, map_location='cpu')
            except Exception as err:
                raise ModelFileError(
                    f'TorchScript file {path!r} cannot be loaded ({err}); '
                    'export it again') from err
        self.module = module.eval()

    def run(self, clips):
        with torch.no_grad(), torch.autocast(
                'cpu', dtype=torch.bfloat16,
                enabled=self.precision == 'bf16'):
            return self.module(torch.from_numpy(clips)).float().numpy()


class OnnxRuntimeEngine(Engine):
    """An ONNX file (float32, or int8 with QDQ nodes) on ONNX Runtime's CPU
    provider; float32 only.

    Args:
        path (str): The ONNX file (or a name for ``model``).
        precision (str): ``f32`` (ONNX Runtime's CPU provider has no bf16
            path).
        num_threads (int, optional): Intra-op threads.
        model (bytes, optional): A serialised ONNX model to run instead of
            ``path``.
    """

    name = 'onnxruntime'

    def __init__(self, path, precision='f32', num_threads=None,
                 model=None) -> None:
        super().__init__(path, precision, num_threads)
        if precision != 'f32':
            raise InferenceError(
                'onnxruntime runs float32 only; bf16 is on openvino or '
                'pytorch')
        ort = require('onnxruntime', 'the onnxruntime engine')
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(
                path if model is None else model, options,
                providers=['CPUExecutionProvider'])
        except Exception as err:
            raise ModelFileError(
                f'ONNX file {path!r} cannot be loaded ({_first_line(err)}); '
                'export it again') from err
        shape = self.session.get_inputs()[0].shape
        if all(isinstance(s, int) for s in shape[1:]):
            self.input_shape = tuple(shape[1:])
        self._input = self.session.get_inputs()[0].name

    def run(self, clips):
        return self.session.run(None, {self._input: clips})[0]


class OpenVINOEngine(Engine):
    """An OpenVINO model (IR, ONNX or TorchScript file, or in memory) on
    OpenVINO's CPU plugin, compiled with an explicit
    ``INFERENCE_PRECISION_HINT``. The model is compiled for each batch size
    it is given (static shapes are OpenVINO's fastest; the last few are
    kept).

    Args:
        path (str): The model file (or a name for ``model``).
        precision (str): ``f32`` or ``bf16`` (CPUs with AVX-512 BF16 or
            AMX).
        num_threads (int, optional): ``INFERENCE_NUM_THREADS``.
        model (openvino.Model, optional): Run this model instead of reading
            ``path``.
    """

    name = 'openvino'
    _KEEP = 4

    def __init__(self, path, precision='f32', num_threads=None,
                 model=None) -> None:
        super().__init__(path, precision, num_threads)
        ov = require('openvino', 'the openvino engine')
        self._ov = ov
        self.core = ov.Core()
        if precision == 'bf16' and 'BF16' not in self.core.get_property(
                'CPU', 'OPTIMIZATION_CAPABILITIES'):
            raise InferenceError('this CPU has no bf16 instructions (AVX-512 '
                             'BF16 or AMX): use precision f32')
        if model is None:
            try:
                if osp.splitext(path)[1].lower() in ('.xml', '.onnx'):
                    model = self.core.read_model(path)
                else:  # TorchScript
                    model = ov.convert_model(
                        torch.jit.load(path, map_location='cpu'))
            except Exception as err:
                raise ModelFileError(
                    f'OpenVINO cannot read {path!r} ({_first_line(err)}); '
                    'export it again') from err
        self.model = model
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_static and all(d.is_static for d in
                                        list(shape)[1:]):
            self.input_shape = tuple(d.get_length() for d in
                                     list(shape)[1:])
        self.config = {'INFERENCE_PRECISION_HINT': precision,
                       'PERFORMANCE_HINT': 'LATENCY'}
        if num_threads:
            self.config['INFERENCE_NUM_THREADS'] = num_threads
        self._compiled: Dict[Tuple[int, ...], object] = {}

    def compiled(self, shape: Tuple[int, ...]):
        """The model compiled for inputs of ``shape``."""
        shape = tuple(int(s) for s in shape)
        if shape not in self._compiled:
            model = self.model.clone()
            model.reshape({model.inputs[0]: self._ov.PartialShape(
                list(shape))})
            if len(self._compiled) >= self._KEEP:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[shape] = self.core.compile_model(
                model, 'CPU', self.config)
        return self._compiled[shape]

    def run(self, clips):
        compiled = self.compiled(clips.shape)
        return compiled(clips)[compiled.outputs[0]].copy()


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_engine(path: str,
                engine: str = 'auto',
                precision: str = 'f32',
                num_threads: Optional[int] = None,
                recognizer=None,
                clip_shape: Optional[Tuple[int, ...]] = None) -> Engine:
    """Open the model file ``path`` on ``engine``.

    Args:
        path (str): An exported model (OpenVINO IR .xml, ONNX, TorchScript)
            or a training checkpoint (then ``recognizer`` is needed).
        engine (str): ``pytorch``, ``onnxruntime``, ``openvino`` or
            ``auto`` (:func:`resolve_engine`).
        precision (str): ``f32`` (default) or ``bf16``.
        num_threads (int, optional): Threads of the engine (default: the
            engine's own choice).
        recognizer (Config | dict, optional): For a checkpoint: the model's
            config (its ``model`` and ``test_pipeline`` are used) or its
            recognizer's model dict (then give ``clip_shape``).
        clip_shape (tuple, optional): ``(3, T, H, W)`` a checkpoint is
            converted at (default: one view of the config's test
            pipeline).

    Raises:
        ModelFileError: for a missing or damaged file.
        MissingEngineError: if the engine's package is not installed.
        InferenceError: for an engine or precision that cannot run the
            file.
    """
    name = resolve_engine(engine, path)
    kind = file_kind(path)
    if kind == 'checkpoint':
        return _engine_of_checkpoint(path, name, precision, num_threads,
                                     recognizer, clip_shape)
    cls = {'pytorch': PyTorchEngine, 'onnxruntime': OnnxRuntimeEngine,
           'openvino': OpenVINOEngine}[name]
    return cls(path, precision, num_threads)


def view_shape(cfg) -> Tuple[int, ...]:
    """``(3, T, H, W)`` of one view of the config's test pipeline."""
    from x3d_plugin.models.complexity import views_of_test_pipeline
    found = views_of_test_pipeline(cfg.test_pipeline)
    if found is None:
        raise InferenceError('the test pipeline has no clip length or crop '
                             'size to read the input shape from')
    return tuple(found[0][1:])


def _engine_of_checkpoint(path, name, precision, num_threads, recognizer,
                          clip_shape):
    from mmengine.config import Config, ConfigDict

    from .inference import init_recognizer
    if recognizer is None:
        raise InferenceError(f'{path!r} is a checkpoint: give the config it '
                             'belongs to (or export the model first)')
    if isinstance(recognizer, Config):
        clip_shape = clip_shape or view_shape(recognizer)
        recognizer = recognizer.model
    if clip_shape is None:
        raise InferenceError('give the clip shape to convert the checkpoint '
                             'at')
    cfg = Config(dict(model=ConfigDict(recognizer)))
    net = deployable_network(init_recognizer(cfg, path))
    example = torch.randn(1, *clip_shape)
    if name == 'pytorch':
        return PyTorchEngine(path, precision, num_threads, module=net)
    if name == 'openvino':
        from .export import openvino_model
        return OpenVINOEngine(path, precision, num_threads,
                              model=openvino_model(net, example))
    import io

    from .export import write_onnx
    buffer = io.BytesIO()
    write_onnx(net, example, buffer)
    return OnnxRuntimeEngine(path, precision, num_threads,
                             model=buffer.getvalue())


@MODELS.register_module()
class EngineRecognizer(BaseModel):
    """A recognizer whose backbone and head run on an engine: the config's
    data preprocessor, the engine's logits for every view, then the head's
    averaging of the views (``average_clips``) into the prediction.
    Inference only.

    A config uses it by wrapping its model::

        model = dict(type='x3d_plugin.EngineRecognizer',
                     recognizer=<the recognizer's model dict>,
                     model_file='x3d_m.xml', engine='openvino')

    Args:
        recognizer (dict): The config's recognizer (its
            ``data_preprocessor``, ``cls_head`` and ``test_cfg`` are used;
            the head's weights are not).
        model_file (str): The exported model, or a checkpoint.
        engine (str): ``pytorch``, ``onnxruntime``, ``openvino`` or
            ``auto``.
        precision (str): ``f32`` or ``bf16``.
        num_threads (int, optional): Threads of the engine.
        clip_shape (tuple, optional): ``(3, T, H, W)`` of one test view,
            needed when ``model_file`` is a checkpoint (it is converted at
            that shape).
        init_cfg (dict, optional): Unused (nothing is trained).
    """

    def __init__(self,
                 recognizer: dict,
                 model_file: str,
                 engine: str = 'auto',
                 precision: str = 'f32',
                 num_threads: Optional[int] = None,
                 clip_shape: Optional[Tuple[int, ...]] = None,
                 init_cfg=None) -> None:
        super().__init__(
            data_preprocessor=recognizer.get('data_preprocessor'),
            init_cfg=init_cfg)
        from mmaction.registry import MODELS as MMACTION_MODELS
        self.cls_head = MMACTION_MODELS.build(recognizer['cls_head'])
        test_cfg = recognizer.get('test_cfg') or {}
        self.max_testing_views = test_cfg.get('max_testing_views')
        self.engine = load_engine(model_file, engine, precision,
                                  num_threads, recognizer=recognizer,
                                  clip_shape=clip_shape)

    def forward(self, inputs, data_samples=None, mode='predict'):
        """``mode='predict'`` only: ``inputs`` ``N x V x 3 x T x H x W``
        (V views per video) to one prediction per video."""
        if mode != 'predict':
            raise RuntimeError(f'an EngineRecognizer runs inference only, '
                               f'not mode {mode!r}')
        views = inputs.reshape((-1, ) + tuple(inputs.shape[2:]))
        step = self.max_testing_views or len(views)
        logits = np.concatenate([
            self.engine(views[i:i + step])
            for i in range(0, len(views), step)
        ])
        return self.cls_head.predict_by_feat(torch.from_numpy(logits),
                                             data_samples)

    def init_weights(self) -> None:
        """Nothing to initialise: the weights are in the model file."""
