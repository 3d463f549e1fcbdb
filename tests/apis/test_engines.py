"""CPU engines: exported files (OpenVINO IR, ONNX, TorchScript) and
checkpoints converted in memory give PyTorch's logits on real clips through
the config's test pipeline; int8 models run; errors name the file or the
extra to install."""
import sys

import numpy as np
import pytest
import torch
from mmengine.dataset import Compose

from conftest import ROOT
from utils_helpers import randomize
from x3d_plugin.apis import InferenceError, init_recognizer, predict_video
from x3d_plugin.apis.engines import (EngineRecognizer, MissingEngineError,
                                     ModelFileError, installed_engines,
                                     load_engine, resolve_engine)
from x3d_plugin.apis.export import (deployable_network, export_checked,
                                    export_int8, relative_error)

DEMO = str(ROOT / 'configs' / 'x3d_xs_demo.py')
# The demo config: X3D-XS, 8 classes, 2 clips x 3 crops of 8 x 48 x 48.
SHAPE = (3, 8, 48, 48)
CLIPS = ('arm_wrestling.mp4', 'flipping_pancake.mkv')

openvino = pytest.importorskip('openvino')
pytest.importorskip('onnxruntime')


@pytest.fixture(scope='module')
def model_files(tmp_path_factory):
    """A demo recognizer with random weights (BN statistics too) and its
    checkpoint, OpenVINO IR, ONNX and TorchScript files."""
    root = tmp_path_factory.mktemp('engines')
    recognizer = init_recognizer(DEMO)
    randomize(recognizer, seed=1)
    checkpoint = root / 'demo.pth'
    torch.save({'state_dict': recognizer.state_dict()}, checkpoint)
    net = deployable_network(recognizer)
    example = torch.randn(1, *SHAPE)
    files = dict(checkpoint=str(checkpoint))
    for fmt, name in (('openvino', 'x3d.xml'), ('onnx', 'x3d.onnx'),
                      ('torchscript', 'x3d.ts')):
        files[fmt] = str(root / name)
        export_checked(net, example, files[fmt], fmt)
    return recognizer, files


@pytest.fixture(scope='module')
def real_views(model_files):
    """Every test view (2 clips x 3 crops) of two real clips, normalised by
    the recognizer's data preprocessor: 12 x 3 x 8 x 48 x 48."""
    from conftest import SHARED
    folder = SHARED / 'data' / 'real_clips'
    if not folder.is_dir():
        pytest.skip(f'{folder} is absent (it ships beside the development '
                    'checkout only)')
    recognizer, _ = model_files
    pipeline = Compose(recognizer.cfg.test_pipeline)
    views = []
    for name in CLIPS:
        data = pipeline(dict(filename=str(folder / name), label=-1,
                             start_index=0, modality='RGB'))
        inputs = recognizer.data_preprocessor(
            dict(inputs=[data['inputs']],
                 data_samples=[data['data_samples']]), False)['inputs']
        views.append(inputs.reshape((-1, ) + SHAPE))
    return torch.cat(views)


def pytorch_logits(recognizer, views):
    """The recognizer's own logits (BN not folded, channels-last, the
    plugin's channelwise operator)."""
    with torch.no_grad():
        return recognizer.cls_head(recognizer.backbone(views)).numpy()


@pytest.mark.parametrize('kind, engine', [
    ('torchscript', 'pytorch'),
    ('torchscript', 'openvino'),
    ('onnx', 'onnxruntime'),
    ('onnx', 'openvino'),
    ('openvino', 'openvino'),
    ('checkpoint', 'openvino'),
    ('checkpoint', 'onnxruntime'),
])
def test_float32_engines_match_pytorch_on_real_clips(model_files,
                                                     real_views, kind,
                                                     engine):
    recognizer, files = model_files
    expected = pytorch_logits(recognizer, real_views)
    # Random weights give logits of very different size per class: the
    # check is not trivially met by near-zero outputs.
    assert np.abs(expected).max() > 1.0
    runner = load_engine(files[kind], engine, recognizer=recognizer.cfg)
    assert runner.name == engine
    got = runner(real_views)
    assert got.shape == (12, 8)
    assert relative_error(got, expected) < 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_batches_of_any_size_give_the_same_logits(model_files, real_views):
    _, files = model_files
    engine = load_engine(files['openvino'], 'openvino')
    whole = engine(real_views)
    one_by_one = np.concatenate([engine(v[None]) for v in real_views])
    assert relative_error(one_by_one, whole) < 1e-5
    ts = load_engine(files['torchscript'], 'pytorch')
    assert relative_error(ts(real_views[:5]), whole[:5]) < 1e-4


def test_auto_is_openvino_when_installed(model_files):
    _, files = model_files
    assert 'openvino' in installed_engines()
    for kind in ('openvino', 'onnx', 'checkpoint', 'torchscript'):
        assert resolve_engine('auto', files[kind]) == 'openvino'


def test_predict_video_on_an_engine_equals_pytorch(model_files, shared_dir):
    recognizer, files = model_files
    video = str(shared_dir / 'data' / 'real_clips' / CLIPS[0])
    expected = predict_video(recognizer, video, topk=3)
    on_engine = init_recognizer(DEMO, files['openvino'], engine='openvino')
    assert isinstance(on_engine, EngineRecognizer)
    got = predict_video(on_engine, video, topk=3)
    # Scores are the softmax averaged over the 6 views, as in testing.
    assert got['scores'].sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(got['scores'], expected['scores'],
                               atol=1e-5)
    assert [t['index'] for t in got['topk']] == [
        t['index'] for t in expected['topk']]


@pytest.mark.slow
@pytest.mark.parametrize('fmt, suffix', [('openvino', '.xml'),
                                         ('onnx', '.onnx')])
def test_int8_runs_with_finite_logits(model_files, real_views, tmp_path, fmt,
                                      suffix):
    recognizer, _ = model_files
    net = deployable_network(recognizer)
    calibration = [v[None].numpy() for v in real_views[:8]]
    path = str(tmp_path / ('int8' + suffix))
    agree, diff = export_int8(net, real_views[:1], path, fmt, calibration)
    engine = load_engine(path, 'auto')
    got = engine(real_views)
    expected = pytorch_logits(recognizer, real_views)
    assert got.shape == expected.shape
    assert np.isfinite(got).all()
    # Quantized, not garbage: close to float32 but not equal to it.
    assert 1e-5 < relative_error(got, expected) < 0.25
    assert 0.0 <= agree <= 1.0 and diff < 0.25


def test_bf16_is_explicit(model_files, real_views):
    recognizer, files = model_files
    with pytest.raises(InferenceError, match='float32 only'):
        load_engine(files['onnx'], 'onnxruntime', precision='bf16')
    core = openvino.Core()
    if 'BF16' not in core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'):
        with pytest.raises(InferenceError, match='no bf16'):
            load_engine(files['openvino'], 'openvino', precision='bf16')
        return
    f32 = load_engine(files['openvino'], 'openvino')
    bf16 = load_engine(files['openvino'], 'openvino', precision='bf16')
    assert f32.config['INFERENCE_PRECISION_HINT'] == 'f32'
    expected = pytorch_logits(recognizer, real_views)
    # bf16 keeps 8 bits of mantissa: visibly off float32, still close.
    assert 1e-4 < relative_error(bf16(real_views), expected) < 5e-2


def test_errors_name_the_file_or_the_fix(model_files, tmp_path,
                                         monkeypatch):
    _, files = model_files
    with pytest.raises(ModelFileError, match='does not exist'):
        load_engine(str(tmp_path / 'none.xml'))
    lone = tmp_path / 'lone.xml'
    lone.write_text(open(files['openvino']).read())
    with pytest.raises(ModelFileError, match='no weights file'):
        load_engine(str(lone))
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(open(files['onnx'], 'rb').read()[:5000])
    with pytest.raises(ModelFileError, match='broken.onnx.*export it again'):
        load_engine(str(broken), 'onnxruntime')
    with pytest.raises(InferenceError, match='runs on openvino, not '
                       'onnxruntime'):
        load_engine(files['openvino'], 'onnxruntime')
    with pytest.raises(InferenceError, match='give the config'):
        load_engine(files['checkpoint'], 'openvino')
    engine = load_engine(files['onnx'], 'onnxruntime')
    with pytest.raises(InferenceError, match='takes clips of 3x8x48x48'):
        engine(np.zeros((1, 3, 4, 48, 48), np.float32))
    monkeypatch.setitem(sys.modules, 'openvino', None)
    with pytest.raises(MissingEngineError, match=r'pip install -e '
                       r'"\.\[deploy\]"'):
        load_engine(files['openvino'], 'openvino')
    # auto falls back to ONNX Runtime for an ONNX file.
    assert resolve_engine('auto', files['onnx']) == 'onnxruntime'
