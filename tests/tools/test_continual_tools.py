"""Continual inference on real videos: ``predict_continual``, ``tools/infer.py
--continual`` and ``tools/benchmark/continual_accuracy.py`` on a tiny
generated demo set (X3D-XS of the demo config, random weights)."""
import importlib.util
import json

import numpy as np
import pytest
import torch

from conftest import ROOT
from x3d_plugin.apis import init_recognizer, predict_continual, predict_video
from x3d_plugin.models import continual_from_recognizer

DEMO = str(ROOT / 'configs' / 'x3d_xs_demo.py')


def load_tool(relative):
    spec = importlib.util.spec_from_file_location(
        relative.replace('/', '_')[:-3], ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    # One frame a step: tiny tensors, where two OpenMP threads on a loaded
    # 2-core machine wait on each other longer than the op takes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def demo_set(tmp_path_factory):
    """Two demo test videos (16 frames each), their list and a random
    checkpoint of the demo config."""
    from x3d_plugin.datasets.demo_data import generate
    root = tmp_path_factory.mktemp('continual_demo')
    generate(str(root), train_per_class=0, val_per_class=1)
    lines = (root / 'val_list_videos.txt').read_text().splitlines()[:2]
    (root / 'two.txt').write_text('\n'.join(lines) + '\n')
    torch.manual_seed(0)
    model = init_recognizer(DEMO)
    model.init_weights()
    checkpoint = root / 'random.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    return root, str(checkpoint)


def test_predict_continual_every_frame_interval(demo_set, one_thread):
    root, checkpoint = demo_set
    video = str(root / (root / 'two.txt').read_text().split()[0])
    model = init_recognizer(DEMO, checkpoint)
    pred = predict_continual(model, video, topk=3)
    # The demo config samples every 2nd frame of the 16-frame videos.
    assert [f['frame'] for f in pred['frames']] == list(range(0, 16, 2))
    assert pred['scores'].shape == (8, 8)
    np.testing.assert_allclose(pred['scores'].sum(1), 1, atol=1e-5)
    assert pred['warmup_frames'] == 56 + 15 * 7 + 7
    for f, s in zip(pred['frames'], pred['scores']):
        assert f['topk'][0]['index'] == int(np.argmax(s))
        assert len(f['topk']) == 3
    # Decoding in chunks keeps the state: the same scores.
    net = continual_from_recognizer(model)
    chunked = predict_continual(model, video, net, chunk_frames=3)
    np.testing.assert_allclose(chunked['scores'], pred['scores'], atol=1e-6)


def test_infer_continual_cli(demo_set, one_thread, tmp_path, capsys):
    root, checkpoint = demo_set
    video = str(root / (root / 'two.txt').read_text().split()[0])
    out = tmp_path / 'frames.json'
    infer = load_tool('tools/infer.py')
    result = infer.main([
        video, '--config', DEMO, '--checkpoint', checkpoint, '--continual',
        '--window', '4', '--topk', '2', '--label-map',
        str(root / 'label_map.txt'), '--out', str(out)
    ])
    written = json.loads(out.read_text())
    assert len(written['frames']) == 8
    assert written['warmup_frames'] == 56 + 15 * 3 + 3
    assert all(len(f['topk']) == 2 for f in written['frames'])
    printed = capsys.readouterr().out
    assert written['frames'][-1]['topk'][0]['label'] in printed
    assert result['frames'] == written['frames']


def test_accuracy_tool_matches_both_modes(demo_set, one_thread, tmp_path):
    root, checkpoint = demo_set
    tool = load_tool('tools/benchmark/continual_accuracy.py')
    out = tmp_path / 'acc.json'
    result = tool.main([DEMO, checkpoint, '--ann-file',
                        str(root / 'two.txt'), '--video-root', str(root),
                        '--out', str(out)])
    assert json.loads(out.read_text())['videos'] == 2
    model = init_recognizer(DEMO, checkpoint)
    net = continual_from_recognizer(model)
    for row in result['per_video']:
        clip = predict_video(model, row['video'])['scores']
        cont = predict_continual(model, row['video'], net)['scores'][-1]
        assert row['clip_top1'] == int(np.argmax(clip))
        assert row['continual_top1'] == int(np.argmax(cont))
    labels = [r['label'] for r in result['per_video']]
    assert result['clip_top1'] == pytest.approx(100 * np.mean(
        [r['clip_top1'] == y for r, y in zip(result['per_video'], labels)]))
    with pytest.raises(SystemExit, match='does not exist'):
        tool.main([DEMO, checkpoint, '--ann-file', str(tmp_path / 'no.txt')])


def test_speed_benchmark_table(capsys):
    tool = load_tool('tools/benchmark/continual_speed.py')
    threads = torch.get_num_threads()
    try:
        rows = tool.main(['--archs', 'xs', '--threads', '1', '--repeats',
                          '1'])
    finally:
        torch.set_num_threads(threads)
    (row, ) = rows
    assert row['clip_gflops'] == pytest.approx(0.605, abs=1e-3)
    # One frame of XS's four, plus the pooled layers once.
    assert row['step_gflops'] == pytest.approx(0.1527, abs=1e-4)
    assert row['clip_ms'] > 0 and row['step_ms'] > 0
    printed = capsys.readouterr().out
    assert '| X3D-XS | 4x160² | 1 |' in printed and 'load average' in printed
