"""Complexity report, video inference (top-k and timeline), export."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from x3d_plugin.apis import (InferenceError, init_recognizer,
                             predict_timeline, predict_video, read_label_map)
from x3d_plugin.datasets.demo_data import render_video, write_video

DEMO = str(ROOT / 'configs' / 'x3d_xs_demo.py')


def run_tool(*args):
    return subprocess.run([sys.executable, *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope='module')
def demo_video(tmp_path_factory):
    """A 64-frame video of class 1 ('moving up-right') at 12 fps."""
    path = tmp_path_factory.mktemp('infer') / 'right.mp4'
    write_video(path, render_video(1, np.random.default_rng(3), 64))
    return str(path)


@pytest.fixture(scope='module')
def demo_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = init_recognizer(DEMO)
    model.init_weights()
    path = tmp_path_factory.mktemp('ckpt') / 'demo.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


def test_complexity_report_numbers():
    import importlib.util
    from x3d_plugin.models import VARIANTS
    spec = importlib.util.spec_from_file_location(
        'complexity', ROOT / 'tools' / 'analysis' / 'complexity.py')
    complexity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(complexity)
    params, flops = complexity.main(
        ['--arch', 'm', '--no-mmengine'])
    assert params == 3_794_322
    assert flops / 1e9 == pytest.approx(4.73, rel=0.01)
    rows = complexity.main(['--all'])
    for arch, params, flops, views, _ in rows:
        variant = VARIANTS[arch]
        assert params / 1e6 == pytest.approx(variant.paper_params_m, rel=0.01)
        assert flops / 1e9 == pytest.approx(variant.paper_gflops, rel=0.01)
        assert views == 30


def test_infer_top_k_equals_recognizer_test_output(demo_video,
                                                   demo_checkpoint,
                                                   tmp_path):
    from mmaction.registry import DATASETS
    from mmengine.config import Config
    model = init_recognizer(DEMO, demo_checkpoint)
    result = predict_video(model, demo_video, topk=3)
    # The same video through the config's test dataset and test_step.
    cfg = Config.fromfile(DEMO)
    list_file = tmp_path / 'infer_test_list.txt'
    list_file.write_text(f'{demo_video} 1\n')
    dataset = DATASETS.build(
        dict(cfg.test_dataloader.dataset, ann_file=str(list_file),
             data_prefix=dict(video='')))
    sample = dataset[0]
    with torch.no_grad():
        expected = model.test_step(dict(
            inputs=[sample['inputs']],
            data_samples=[sample['data_samples']]))[0].pred_score
    np.testing.assert_allclose(result['scores'], expected.numpy(),
                               rtol=1e-5, atol=1e-6)
    order = np.argsort(-expected.numpy())[:3]
    assert [t['index'] for t in result['topk']] == order.tolist()
    assert sum(result['scores']) == pytest.approx(1.0, abs=1e-5)


def test_infer_with_folded_bn_gives_the_same_scores(demo_video,
                                                    demo_checkpoint):
    plain = predict_video(init_recognizer(DEMO, demo_checkpoint), demo_video)
    model = init_recognizer(DEMO, demo_checkpoint, fuse_conv_bn=True)
    assert model.conv_bn_fused > 0
    fused = predict_video(model, demo_video)
    np.testing.assert_allclose(fused['scores'], plain['scores'], rtol=1e-4,
                               atol=1e-6)


def test_infer_cli_top_k_and_timeline(demo_video, demo_checkpoint, tmp_path):
    out = tmp_path / 'result.json'
    label_map = tmp_path / 'demo_labels.txt'
    from x3d_plugin.datasets.demo_data import CLASSES
    label_map.write_text('\n'.join(CLASSES) + '\n')
    proc = run_tool('tools/infer.py', demo_video, '--config', DEMO,
                    '--checkpoint', demo_checkpoint, '--label-map',
                    str(label_map), '--out', str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    top = json.loads(out.read_text())['topk']
    assert len(top) == 5 and all(t['label'] in CLASSES for t in top)
    assert top[0]['score'] >= top[-1]['score']

    out = tmp_path / 'timeline.json'
    proc = run_tool('tools/infer.py', demo_video, '--config', DEMO,
                    '--checkpoint', demo_checkpoint, '--timeline',
                    '--out', str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    windows = json.loads(out.read_text())['windows']
    # 64 frames at 12 fps, windows of 8 frames every 2nd (16 frames):
    # starts at frames 0, 16, 32, 48.
    assert len(windows) == 4
    assert windows[0]['start'] == 0 and windows[1]['start'] == pytest.approx(
        16 / 12)
    png = tmp_path / 'timeline_timeline.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_timeline_api_window_scores_are_probabilities(demo_video,
                                                      demo_checkpoint):
    model = init_recognizer(DEMO, demo_checkpoint)
    windows = predict_timeline(model, demo_video, stride=2.0,
                               progress=False)
    assert [round(w['start'], 3) for w in windows] == [0.0, 2.0, 4.0]
    for w in windows:
        assert sum(w['scores']) == pytest.approx(1.0, abs=1e-5)
        assert w['top1'] == int(np.argmax(w['scores']))


def test_infer_errors(demo_video, demo_checkpoint, tmp_path):
    model = init_recognizer(DEMO, demo_checkpoint)
    with pytest.raises(InferenceError, match='does not exist'):
        predict_video(model, str(tmp_path / 'missing.mp4'))
    bad = tmp_path / 'bad.mp4'
    bad.write_bytes(b'garbage' * 100)
    with pytest.raises(InferenceError, match='cannot be read'):
        predict_video(model, str(bad))
    labels = tmp_path / 'labels.txt'
    labels.write_text('a\nb\n')
    with pytest.raises(InferenceError, match='2 names but the model has 8'):
        read_label_map(str(labels), 8)
    from x3d_plugin.models import X3D
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in
                               X3D(arch='l').state_dict().items()}}, other)
    with pytest.raises(InferenceError, match='does not fit'):
        init_recognizer(DEMO, str(other))
    proc = run_tool('tools/infer.py', str(tmp_path / 'missing.mp4'),
                    '--config', DEMO, '--checkpoint', demo_checkpoint)
    assert proc.returncode != 0 and 'missing.mp4' in proc.stderr


def test_converted_official_checkpoint_end_to_end(shared_dir, tmp_path):
    """PySlowFast checkpoint -> converter -> inference with the K400 config
    and label map on a real clip."""
    converted = tmp_path / 'x3d_xs.pth'
    proc = run_tool('tools/convert_checkpoint.py',
                    str(shared_dir / 'reference/slowfast_x3d_xs/'
                        'x3d_xs_slowfast_random.pyth'), str(converted),
                    '--from', 'slowfast', '--config',
                    'configs/x3d_xs_k400.py')
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / 'pred.json'
    proc = run_tool('tools/infer.py',
                    str(shared_dir / 'data/real_clips/arm_wrestling.mp4'),
                    '--config', 'configs/x3d_xs_k400.py', '--checkpoint',
                    str(converted), '--label-map',
                    'configs/label_map_k400.txt', '--out', str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    top = json.loads(out.read_text())['topk']
    names = (ROOT / 'configs' / 'label_map_k400.txt').read_text().split('\n')
    assert [t['label'] for t in top] == [names[t['index']] for t in top]


@pytest.mark.parametrize('fmt', ['torchscript', 'onnx'])
def test_export_matches_pytorch(demo_checkpoint, tmp_path, fmt):
    if fmt == 'onnx':
        pytest.importorskip('onnxruntime')
    out = tmp_path / f'x3d.{fmt}'
    proc = run_tool('tools/deployment/export.py', DEMO, demo_checkpoint,
                    str(out), '--format', fmt, '--shape', '1', '3', '8',
                    '48', '48')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'difference to PyTorch' in proc.stdout
    model = init_recognizer(DEMO, demo_checkpoint)
    x = torch.randn(1, 3, 8, 48, 48)
    with torch.no_grad():
        expected = model.cls_head(model.backbone(x))
    if fmt == 'torchscript':
        got = torch.jit.load(str(out))(x)
    else:
        import onnxruntime
        session = onnxruntime.InferenceSession(
            str(out), providers=['CPUExecutionProvider'])
        got = torch.from_numpy(session.run(None, {'clips': x.numpy()})[0])
    assert (got - expected).abs().max() < 1e-4
