"""predict_timeline: windows placed and sampled as the config's own frame
sampler places and samples a clip, on a file whose frame rate is not 30.

The video has 48 frames at 12 fps (4 s)."""
import sys

import numpy as np
import pytest
from mmengine.config import Config

from conftest import ROOT
from utils_helpers import smooth_frames
from x3d_plugin.apis import InferenceError, init_recognizer, predict_timeline
from x3d_plugin.datasets import MissingPackageError
from x3d_plugin.datasets.demo_data import write_video
from x3d_plugin.datasets.transforms import PyAVSparseDecode

FPS, FRAMES = 12, 48


@pytest.fixture(scope='module')
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp('timeline') / 'waves.mp4'
    write_video(path, smooth_frames(FRAMES, 48, 64), fps=FPS)
    return str(path)


def model_with_sampler(sampler):
    """X3D-XS of the demo config (random weights) whose test pipeline
    samples with ``sampler``."""
    cfg = Config.fromfile(str(ROOT / 'configs' / 'x3d_xs_demo.py'))
    cfg.test_pipeline = [
        dict(type='x3d_plugin.PyAVInitAtScale', short_side=32),
        sampler,
        dict(type='x3d_plugin.PyAVSparseDecode'),
        dict(type='CenterCrop', crop_size=32),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs')
    ]
    return init_recognizer(cfg)


@pytest.fixture
def decoded(monkeypatch):
    """The frame indices each window decodes, in order."""
    calls = []
    transform = PyAVSparseDecode.transform

    def spy(self, results):
        calls.append(np.asarray(results['frame_inds']).tolist())
        return transform(self, results)

    monkeypatch.setattr(PyAVSparseDecode, 'transform', spy)
    return calls


def check_times(windows, starts, ends):
    """The windows' starts and ends (s) are those frames of the file."""
    assert [w['start'] for w in windows] == pytest.approx(
        [s / FPS for s in starts])
    if ends is not None:
        assert [w['end'] for w in windows] == pytest.approx(
            [e / FPS for e in ends])


def test_sample_frames_windows(video, decoded):
    """MMAction2's SampleFrames: every frame_interval-th frame of the file,
    no resampling to 30 fps. A window is (4 - 1) * 3 + 1 = 10 frames."""
    model = model_with_sampler(
        dict(type='SampleFrames', clip_len=4, frame_interval=3,
             test_mode=True))
    windows = predict_timeline(model, video, progress=False)
    # Windows touch: starts at frames 0, 10, 20, 30 (the last that fits).
    check_times(windows, [0, 10, 20, 30], [10, 20, 30, 40])
    assert decoded == [[0, 3, 6, 9], [10, 13, 16, 19], [20, 23, 26, 29],
                       [30, 33, 36, 39]]
    for w in windows:
        assert sum(w['scores']) == pytest.approx(1.0, abs=1e-5)
        assert w['top1'] == int(np.argmax(w['scores']))
        assert w['score'] == pytest.approx(max(w['scores']))

    decoded.clear()
    windows = predict_timeline(model, video, stride=1.5, progress=False)
    check_times(windows, [0, 18, 36], None)
    assert decoded == [[0, 3, 6, 9], [18, 21, 24, 27], [36, 39, 42, 45]]


def test_sample_frames_defaults(video, decoded):
    """SampleFrames' own default frame_interval=1 and no target_fps."""
    model = model_with_sampler(
        dict(type='SampleFrames', clip_len=4, test_mode=True))
    windows = predict_timeline(model, video, stride=1.0, progress=False)
    check_times(windows, [0, 12, 24, 36], [4, 16, 28, 40])
    assert decoded == [[s + i for i in range(4)] for s in (0, 12, 24, 36)]


def test_slowfast_windows_resample_to_target_fps(video, decoded):
    """SlowFastSampleFrames with target_fps=30: 4 x 5 frames at 30 fps are
    8 frames of the 12 fps file, spread as torch.linspace spreads them."""
    model = model_with_sampler(
        dict(type='x3d_plugin.SlowFastSampleFrames', clip_len=4,
             frame_interval=5, target_fps=30, test_mode=True))
    windows = predict_timeline(model, video, progress=False)
    starts = [0, 8, 16, 24, 32, 40]
    check_times(windows, starts, [s + 8 for s in starts])
    assert decoded == [[s, s + 2, s + 4, s + 7] for s in starts]

    # Without target_fps the file's own rate: 20 frames a window.
    decoded.clear()
    model = model_with_sampler(
        dict(type='x3d_plugin.SlowFastSampleFrames', clip_len=4,
             frame_interval=5, target_fps=None, test_mode=True))
    windows = predict_timeline(model, video, progress=False)
    check_times(windows, [0, 20], [20, 40])
    assert decoded == [[0, 6, 12, 19], [20, 26, 32, 39]]


def test_unsupported_sampler_is_named(video):
    model = model_with_sampler(
        dict(type='DenseSampleFrames', clip_len=4, test_mode=True))
    with pytest.raises(InferenceError,
                       match='exactly one x3d_plugin.SlowFastSampleFrames '
                       'or SampleFrames .* found 0'):
        predict_timeline(model, video, progress=False)


def test_missing_av_is_not_called_an_unreadable_video(video, tmp_path,
                                                      monkeypatch):
    model = model_with_sampler(
        dict(type='SampleFrames', clip_len=4, test_mode=True))
    bad = tmp_path / 'bad.mp4'
    bad.write_bytes(b'garbage' * 100)
    with pytest.raises(InferenceError,
                       match=r"video '.*bad.mp4' cannot be read "
                       r'\(InvalidDataError: .*reencode_videos.py'):
        predict_timeline(model, str(bad), progress=False)
    monkeypatch.setitem(sys.modules, 'av', None)
    with pytest.raises(MissingPackageError, match='`pip install av`'):
        predict_timeline(model, video, progress=False)
