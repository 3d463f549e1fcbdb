"""Per-snippet features for temporal action localization
(tools/extract_features.py, x3d_plugin.apis.features) on a real clip:
arm_wrestling.mp4, 280 frames at 28 fps (10 s), 340 x 256.

The model is X3D-XS of the demo config with random weights, fed 4-frame
clips at a 32-pixel crop."""
import importlib.util
import math
import os

import numpy as np
import pytest
import torch
from mmaction.datasets.transforms import LoadLocalizationFeature
from mmengine.config import Config
from mmengine.dataset import Compose

from conftest import ROOT
from x3d_plugin.apis import InferenceError, init_recognizer
from x3d_plugin.apis.features import (extract_features, resample_features,
                                      write_feature_csv)
from x3d_plugin.datasets.transforms import PyAVSparseDecode

TOTAL_FRAMES = 280
TAIL = [
    dict(type='x3d_plugin.PyAVSparseDecode'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]


def tiny_config(sampler):
    cfg = Config.fromfile(str(ROOT / 'configs' / 'x3d_xs_demo.py'))
    cfg.test_pipeline = [
        dict(type='x3d_plugin.PyAVInitAtScale', short_side=32), sampler
    ] + TAIL
    return cfg


# X3D-XS's clip: 4 frames every 12th at 30 fps (PySlowFast X3D_XS.yaml).
SLOWFAST = dict(type='x3d_plugin.SlowFastSampleFrames', clip_len=4,
                frame_interval=12, test_mode=True)


@pytest.fixture(scope='module')
def video():
    path = ROOT.parent / 'shared' / 'data' / 'real_clips' / 'arm_wrestling.mp4'
    if not path.is_file():
        pytest.skip(f'{path} is absent (it ships beside the development '
                    'checkout only)')
    return str(path)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    model = init_recognizer(tiny_config(SLOWFAST))
    model.init_weights()
    return model.eval()


@pytest.fixture
def decoded(monkeypatch):
    """The frame indices of each decode call, in order."""
    calls = []
    transform = PyAVSparseDecode.transform

    def spy(self, results):
        calls.append(np.asarray(results['frame_inds']).tolist())
        return transform(self, results)

    monkeypatch.setattr(PyAVSparseDecode, 'transform', spy)
    return calls


def num_snippets(stride):
    return math.ceil((TOTAL_FRAMES - stride // 2) / stride)


@pytest.mark.parametrize('stride', [16, 40])
def test_snippets_follow_length_and_stride(model, video, decoded, stride):
    result = extract_features(model, video, stride, batch_size=4)
    # 17 snippets at stride 16, 7 at stride 40.
    assert result['features'].shape == (num_snippets(stride), 192)
    assert result['features'].dtype == np.float32
    assert (result['total_frames'], result['fps']) == (TOTAL_FRAMES, 28.0)
    centres = list(range(stride // 2, TOTAL_FRAMES, stride))
    assert result['centres'].tolist() == centres
    # One decode call per batch of 4 snippets, 4 frames a snippet.
    assert [len(c) for c in decoded] == [
        4 * min(4, len(centres) - i) for i in range(0, len(centres), 4)
    ]
    clips = np.concatenate(decoded).reshape(-1, 4)
    # A clip spans 4 * 12 frames at 30 fps = 44.8 frames at 28 fps; its
    # third sampled frame is the snippet's centre, the others at steps of
    # 44.8 / 3 (floored), clamped to the video.
    assert clips[:, 2].tolist() == centres
    want = np.clip(
        np.array(centres)[:, None] + np.array([-29, -15, 0, 14])[None],
        0, TOTAL_FRAMES - 1)
    assert clips.tolist() == want.tolist()
    assert np.isfinite(result['features']).all()
    assert result['features'].std(axis=0).max() > 0  # snippets differ


def test_deterministic_and_batch_independent(model, video, tmp_path):
    first = extract_features(model, video, 40, batch_size=4)['features']
    second = extract_features(model, video, 40, batch_size=4)['features']
    assert np.array_equal(first, second)
    write_feature_csv(str(tmp_path / 'a.csv'), first)
    write_feature_csv(str(tmp_path / 'b.csv'), second)
    assert (tmp_path / 'a.csv').read_bytes() == (tmp_path /
                                                 'b.csv').read_bytes()
    one_by_one = extract_features(model, video, 40, batch_size=1)['features']
    np.testing.assert_allclose(one_by_one, first, rtol=1e-5, atol=1e-7)


def test_head_features(model, video):
    conv = extract_features(model, video, 40, 'head_conv')['features']
    pre_logits = extract_features(model, video, 40, 'pre_logits')['features']
    assert conv.shape == (7, 432)  # X3DHead conv_5 width
    assert pre_logits.shape == (7, 2048)  # X3D.DIM_C5
    # Both come after a ReLU.
    assert conv.min() >= 0 and pre_logits.min() >= 0
    head = model.cls_head
    with torch.no_grad():
        want = head.relu(head.fc1(torch.from_numpy(conv))).numpy()
    np.testing.assert_allclose(pre_logits, want, rtol=1e-5, atol=1e-6)


def test_equals_mmaction2_long_video_feature_head(video):
    """With MMAction2's SampleFrames in the config, the snippets are those
    of UntrimmedSampleFrames and the features those of FeatureHead, the
    two pieces of MMAction2's own long-video feature extraction."""
    torch.manual_seed(0)
    sampler = dict(type='SampleFrames', clip_len=4, frame_interval=4,
                   test_mode=True)
    model = init_recognizer(tiny_config(sampler))
    model.init_weights()
    ours = extract_features(model.eval(), video, 16)['features']

    ref_cfg = tiny_config(
        dict(type='UntrimmedSampleFrames', clip_len=4, clip_interval=16,
             frame_interval=4))
    ref_cfg.model.cls_head = dict(type='FeatureHead', average_clips=None)
    ref = init_recognizer(ref_cfg)
    ref.load_state_dict({
        k: v
        for k, v in model.state_dict().items() if not k.startswith('cls_head')
    })
    data = Compose(ref_cfg.test_pipeline)(
        dict(filename=video, label=-1, start_index=0, modality='RGB'))
    with torch.no_grad():
        want = ref.eval().test_step(
            dict(inputs=[data['inputs']],
                 data_samples=[data['data_samples']]))[0]
    assert ours.shape == tuple(want.shape) == (17, 192)
    np.testing.assert_allclose(ours, want.numpy(), rtol=1e-5, atol=1e-7)


def test_csv_read_by_load_localization_feature(model, video, tmp_path):
    feats = extract_features(model, video, 16)['features']
    path = tmp_path / 'arm_wrestling.csv'
    write_feature_csv(str(path), feats)
    lines = path.read_text().splitlines()
    assert lines[0] == ','.join(f'f{i}' for i in range(192))
    assert len(lines) == 1 + 17
    out = LoadLocalizationFeature()(dict(feature_path=str(path)))
    # MMAction2 keeps features as feature dim x time.
    assert out['raw_feature'].shape == (192, 17)
    np.testing.assert_allclose(out['raw_feature'].T, feats, rtol=1e-5,
                               atol=1e-9)
    with pytest.raises(ValueError, match='at least 2.*smaller stride'):
        write_feature_csv(str(tmp_path / 'one.csv'), feats[:1])
    assert not (tmp_path / 'one.csv').exists()


def test_resample_matches_mmaction2_activitynet_pooling():
    """resample_features gives the numbers of pool_feature in MMAction2's
    tools/data/activitynet/activitynet_feature_postprocessing.py."""
    pytest.importorskip('scipy')
    import mmaction
    script = os.path.join(
        os.path.dirname(mmaction.__file__), '.mim', 'tools', 'data',
        'activitynet', 'activitynet_feature_postprocessing.py')
    if not os.path.isfile(script):
        pytest.skip(f'{script} is not installed')
    spec = importlib.util.spec_from_file_location('anet_post', script)
    anet_post = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anet_post)
    rng = np.random.default_rng(0)
    for length in (1, 2, 17, 250):
        feats = rng.standard_normal((length, 6)).astype(np.float32)
        got = resample_features(feats, 100)
        assert got.shape == (100, 6)
        np.testing.assert_allclose(
            got, anet_post.pool_feature(feats, 100), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location(
        'extract_features', ROOT / 'tools' / 'extract_features.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def files(model, tmp_path_factory):
    """The tiny config and the model's weights as files."""
    folder = tmp_path_factory.mktemp('extract')
    config = folder / 'tiny.py'
    tiny_config(SLOWFAST).dump(str(config))
    checkpoint = folder / 'weights.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    return str(config), str(checkpoint)


def test_tool_writes_skips_and_reports(tool, files, video, tmp_path,
                                       capsys):
    config, checkpoint = files
    corrupt = tmp_path / 'corrupt.mp4'
    corrupt.write_bytes(b'\x00\x01 not a video' * 100)
    missing = str(tmp_path / 'missing.mp4')
    out = tmp_path / 'feats'
    args = [config, checkpoint, str(out), '--video', video, missing,
            str(corrupt), '--stride', '40']
    assert tool.main(args) == 1
    captured = capsys.readouterr()
    assert f"video {missing!r} does not exist" in captured.err
    assert f'video {str(corrupt)!r} cannot be read' in captured.err
    assert 'tools/data/reencode_videos.py' in captured.err
    assert '1 written, 0 kept, 2 failed' in captured.out
    csv = out / 'arm_wrestling.csv'
    assert sorted(p.name for p in out.iterdir()) == ['arm_wrestling.csv']
    feats = LoadLocalizationFeature()(dict(feature_path=str(csv)))
    assert feats['raw_feature'].shape == (192, 7)

    # A second run keeps the file; --overwrite replaces it (here resampled
    # to BMN's temporal_dim of 100).
    csv.write_text(csv.read_text() + '\n')  # a mark to see it kept
    kept = csv.read_bytes()
    assert tool.main(args[:5] + ['--stride', '40']) == 0
    assert 'exists, kept' in capsys.readouterr().out
    assert csv.read_bytes() == kept
    assert tool.main(args[:5] + [
        '--stride', '40', '--temporal-scale', '100', '--overwrite'
    ]) == 0
    assert 'arm_wrestling.csv: 100 x 192 (7 snippets)' in (
        capsys.readouterr().out)
    feats = LoadLocalizationFeature()(dict(feature_path=str(csv)))
    assert feats['raw_feature'].shape == (192, 100)


def test_tool_video_list_names_and_clashes(tool, files, video, tmp_path):
    config, checkpoint = files
    listing = tmp_path / 'videos.txt'
    listing.write_text('arm_wrestling.mp4 3\n')
    out = tmp_path / 'feats'
    assert tool.main([
        config, checkpoint, str(out), '--video-list', str(listing),
        '--video-root', os.path.dirname(video), '--stride', '40'
    ]) == 0
    assert (out / 'arm_wrestling.csv').is_file()
    listing.write_text('a/clip.mp4\nb/clip.mkv\na/clip.avi 0\n')
    args = tool.parse_args([config, checkpoint, str(out), '--video-list',
                            str(listing)])
    with pytest.raises(InferenceError, match='clip.avi.*rename one'):
        tool.video_jobs(args)
