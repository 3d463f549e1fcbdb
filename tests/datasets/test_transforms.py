"""Video loading transforms: fast decode, PySlowFast sampling, bad videos,
jitter, and the real clips of shared/data through the X3D pipelines."""
import sys
from pathlib import Path

import numpy as np
import pytest
from mmaction.registry import TRANSFORMS
from mmengine.config import Config
from mmengine.dataset import Compose

from conftest import ROOT
from utils_helpers import smooth_frames
from x3d_plugin.datasets import MissingPackageError
from x3d_plugin.datasets.demo_data import write_video
from x3d_plugin.datasets.transforms import (DecordInitAtScale,
                                            PyAVInitAtScale,
                                            PyAVSparseDecode,
                                            RobustDecordDecode,
                                            SlowFastSampleFrames,
                                            VideoDecodeError,
                                            clip_frame_indices, clip_span)
from x3d_plugin.datasets.transforms.loading import SKIP_LOG_ENV
from x3d_plugin.datasets.video_io import first_video_stream


@pytest.fixture(scope='module')
def small_video(tmp_path_factory):
    """A 30-frame 96x72 H.264 video of smooth moving waves."""
    path = tmp_path_factory.mktemp('videos') / 'clip.mp4'
    frames = smooth_frames(30, 72, 96)
    write_video(path, frames, fps=10)
    return str(path)


# The two loaders that decode at the target size: (open, decode).
LOADERS = {
    'decord': (DecordInitAtScale, RobustDecordDecode),
    'pyav': (PyAVInitAtScale, PyAVSparseDecode),
}


def decode_at_scale(filename, short_side, frame_inds, loader='decord'):
    init, decode = LOADERS[loader]
    results = init(short_side=short_side)(dict(filename=filename))
    results['frame_inds'] = np.asarray(frame_inds)
    return decode()(results)


def decode_then_resize(filename, short_side, frame_inds,
                       interpolation='bilinear'):
    """MMAction2's stock path: DecordInit, DecordDecode, Resize."""
    pipeline = Compose([
        TRANSFORMS.build(dict(type='DecordInit')),
        TRANSFORMS.build(dict(type='DecordDecode')),
        TRANSFORMS.build(
            dict(type='Resize', scale=(-1, short_side),
                 interpolation=interpolation)),
    ])
    results = pipeline(dict(filename=filename, frame_inds=np.asarray(
        frame_inds), start_index=0, modality='RGB'))
    return results


@pytest.mark.parametrize('loader', sorted(LOADERS))
@pytest.mark.parametrize('short_side', [48, 128])
def test_fast_decode_matches_decode_and_resize(small_video, shared_dir,
                                               short_side, loader):
    """Same frames as DecordDecode + Resize, up to resampling: decord
    averages like Resize(interpolation='area') when it shrinks (measured:
    1.2-3.4 mean abs difference on 0-255; a neighbouring frame differs by
    13-16)."""
    for filename in (small_video,
                     str(shared_dir / 'data/real_clips/arm_wrestling.mp4')):
        inds = [0, 3, 3, 9, 20]
        fast = decode_at_scale(filename, short_side, inds, loader)
        stock = decode_then_resize(filename, short_side, inds, 'area')
        assert fast['img_shape'] == stock['img_shape']
        assert min(fast['img_shape']) == short_side
        a = np.stack(fast['imgs']).astype(np.float32)
        b = np.stack(stock['imgs']).astype(np.float32)
        assert a.shape == b.shape == (5, *stock['img_shape'], 3)
        np.testing.assert_array_equal(a[1], a[2])
        assert np.abs(a - b).mean() < 4.0, filename
        assert np.abs(a.mean((1, 2, 3)) - b.mean((1, 2, 3))).max() < 1.5
        # The check can fail: the next frames are much further away.
        later = decode_then_resize(filename, short_side,
                                   [i + 1 for i in inds], 'area')
        assert np.abs(a - np.stack(later['imgs'])).mean() > 10


def test_decord_size_bug_falls_back_to_resizing(tmp_path):
    """decord 0.6.0 cannot scale a 64x48 video to 72x54; the decode falls
    back to full size + OpenCV resize instead of dropping the video."""
    path = tmp_path / 'small.mp4'
    write_video(path, smooth_frames(12, 48, 64), fps=10)
    fast = decode_at_scale(str(path), 54, [0, 5, 11])
    stock = decode_then_resize(str(path), 54, [0, 5, 11])
    assert fast['img_shape'] == stock['img_shape'] == (54, 72)
    a = np.stack(fast['imgs']).astype(np.float32)
    b = np.stack(stock['imgs']).astype(np.float32)
    assert np.abs(a - b).mean() < 3.0


@pytest.mark.parametrize('loader', sorted(LOADERS))
def test_jitter_range_is_respected(small_video, loader):
    transform = LOADERS[loader][0](short_side=(40, 46))
    sides = {
        min(transform(dict(filename=small_video))['img_shape'])
        for _ in range(60)
    }
    assert sides <= set(range(40, 47))
    assert {40, 46} <= sides  # both ends are drawn


def test_slowfast_sampling_formula():
    # 300 frames at 30 fps, 16 x 5: a clip spans 80 frames; delta 220.
    sampler = SlowFastSampleFrames(16, 5, num_clips=10, test_mode=True)
    out = sampler(dict(total_frames=300, avg_fps=30.0))
    inds = out['frame_inds'].reshape(10, 16)
    np.testing.assert_array_equal(
        inds[0], np.linspace(0, 79, 16).astype(int))
    np.testing.assert_array_equal(
        inds[9], np.linspace(198, 277, 16).astype(int))
    # A 15 fps file: the same 80 frames at 30 fps are 40 frames of it.
    out = SlowFastSampleFrames(16, 5, test_mode=True)(dict(
        total_frames=100, avg_fps=15.0))
    np.testing.assert_array_equal(out['frame_inds'],
                                  np.linspace(0, 39, 16).astype(int))
    # Short video: indices clamp to the last frame.
    out = SlowFastSampleFrames(4, 12, test_mode=True)(dict(
        total_frames=10, avg_fps=30.0))
    assert out['frame_inds'].max() == 9 and out['frame_inds'].min() == 0
    # Training: a random start inside the video.
    train = SlowFastSampleFrames(4, 2, target_fps=None)
    for _ in range(20):
        inds = train(dict(total_frames=50, avg_fps=25.0))['frame_inds']
        assert len(inds) == 4 and inds.min() >= 0 and inds.max() <= 49
        assert inds[-1] - inds[0] == 6 or inds[-1] - inds[0] == 7


def write_corrupt(path: Path):
    """An MP4 header followed by noise: no decoder can open it."""
    noise = np.random.default_rng(0).bytes(3000)
    path.write_bytes(b'\x00\x00\x00\x18ftypmp42' + noise)


@pytest.mark.parametrize('loader', sorted(LOADERS))
def test_bad_video_raises_naming_the_file_in_test_mode(tmp_path, loader):
    init = LOADERS[loader][0]
    bad = tmp_path / 'broken.mp4'
    write_corrupt(bad)
    with pytest.raises(VideoDecodeError, match='broken.mp4'):
        init(short_side=32)(dict(filename=str(bad)))
    with pytest.raises(VideoDecodeError, match='missing.mp4'):
        init()(dict(filename=str(tmp_path / 'missing.mp4')))


def training_dataset(folder, good_video, loader):
    """A training dataset (``on_error='skip'``) read with ``loader``: a
    corrupt video (index 0, label 0) and a good one (index 1, label 1)."""
    from x3d_plugin.datasets import CheckedVideoDataset
    init, decode = LOADERS[loader]
    write_corrupt(folder / 'broken.mp4')
    (folder / 'good.mp4').write_bytes(Path(good_video).read_bytes())
    ann = folder / 'train.txt'
    ann.write_text('broken.mp4 0\ngood.mp4 1\n')
    return CheckedVideoDataset(
        ann_file=str(ann),
        data_prefix=dict(video=str(folder)),
        num_classes=2,
        max_refetch=10,
        pipeline=[
            dict(type=f'x3d_plugin.{init.__name__}', short_side=32,
                 on_error='skip'),
            dict(type='x3d_plugin.SlowFastSampleFrames', clip_len=4,
                 frame_interval=2, target_fps=None),
            dict(type=f'x3d_plugin.{decode.__name__}', on_error='skip'),
            dict(type='FormatShape', input_format='NCTHW'),
            dict(type='PackActionInputs'),
        ])


@pytest.mark.parametrize('loader', sorted(LOADERS))
def test_corrupt_video_in_training_is_skipped_and_reported(
        tmp_path, small_video, monkeypatch, loader):
    log = tmp_path / 'skipped.tsv'
    monkeypatch.setenv(SKIP_LOG_ENV, str(log))
    dataset = training_dataset(tmp_path, small_video, loader)
    sample = dataset[0]  # the broken one: replaced by the good video
    assert sample['data_samples'].gt_label.item() == 1
    assert sample['inputs'].shape == (1, 3, 4, 32, 43)
    lines = log.read_text().splitlines()
    assert len(lines) >= 1
    for line in lines:
        filename, reason = line.split('\t')
        assert filename == str(tmp_path / 'broken.mp4')
        assert reason.startswith('InvalidDataError: ')


@pytest.mark.parametrize('loader', sorted(LOADERS))
@pytest.mark.parametrize('on_error', ['skip', 'raise'])
def test_missing_av_is_raised_not_skipped(small_video, tmp_path, monkeypatch,
                                          loader, on_error):
    """Without PyAV no video can be read: that is the environment's fault,
    so even training stops, naming the package and the install command."""
    log = tmp_path / 'skipped.tsv'
    monkeypatch.setenv(SKIP_LOG_ENV, str(log))
    monkeypatch.setitem(sys.modules, 'av', None)
    init = LOADERS[loader][0](short_side=32, on_error=on_error)
    with pytest.raises(MissingPackageError,
                       match="'av' is needed.*`pip install av`"):
        init(dict(filename=small_video))
    assert not log.exists()


@pytest.mark.parametrize('on_error', ['skip', 'raise'])
def test_missing_decord_is_raised_not_skipped(small_video, monkeypatch,
                                              on_error):
    monkeypatch.setitem(sys.modules, 'decord', None)
    init = DecordInitAtScale(short_side=32, on_error=on_error)
    with pytest.raises(MissingPackageError, match='`pip install decord`'):
        init(dict(filename=small_video))


def test_missing_package_while_decoding_is_raised(small_video, tmp_path,
                                                  monkeypatch):
    """The decode transforms in training mode: a package that fails
    between opening and decoding is raised too."""
    results = PyAVInitAtScale(short_side=32)(dict(filename=small_video))
    results['frame_inds'] = np.array([0, 5])
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, 'av', None)
        with pytest.raises(MissingPackageError, match='`pip install av`'):
            PyAVSparseDecode(on_error='skip')(dict(results))
    # decord's fallback for sizes it cannot scale to needs OpenCV.
    video = tmp_path / 'small.mp4'
    write_video(video, smooth_frames(12, 48, 64), fps=10)
    results = DecordInitAtScale(short_side=54)(dict(filename=str(video)))
    results['frame_inds'] = np.array([0, 5])
    monkeypatch.setitem(sys.modules, 'cv2', None)
    with pytest.raises(MissingPackageError,
                       match='`pip install opencv-python`'):
        RobustDecordDecode(on_error='skip')(results)


@pytest.mark.parametrize('loader', sorted(LOADERS))
def test_training_stops_on_a_missing_package_but_skips_a_bad_video(
        tmp_path, small_video, monkeypatch, loader):
    """The same training dataset: with PyAV missing, reading the good video
    is an error (no silent skipping of every video); with PyAV present, the
    corrupt video is skipped and reported."""
    log = tmp_path / 'skipped.tsv'
    monkeypatch.setenv(SKIP_LOG_ENV, str(log))
    dataset = training_dataset(tmp_path, small_video, loader)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, 'av', None)
        with pytest.raises(MissingPackageError, match='`pip install av`'):
            dataset[1]
    assert not log.exists()
    assert dataset[0]['data_samples'].gt_label.item() == 1
    assert log.read_text().startswith(f'{tmp_path / "broken.mp4"}\t')


# MMAction2's SampleFrames in test mode, one or several clips; the
# indices of each clip are clip_frame_indices at that clip's offset.
SAMPLE_FRAMES_CASES = [
    (dict(clip_len=4, frame_interval=3), 40, 10.0),
    (dict(clip_len=5), 30, 25.0),  # frame_interval defaults to 1
    (dict(clip_len=4, frame_interval=5, target_fps=30), 40, 10.0),
    (dict(clip_len=4, frame_interval=2, target_fps=15), 50, 60.0),
    (dict(clip_len=8, frame_interval=4), 20, 30.0),  # wraps around
    (dict(clip_len=8, frame_interval=4, out_of_bound_opt='repeat_last'), 20,
     30.0),
]


@pytest.mark.parametrize('num_clips', [1, 3])
@pytest.mark.parametrize('kwargs, total, fps', SAMPLE_FRAMES_CASES)
def test_clip_frame_indices_match_sample_frames(kwargs, total, fps,
                                                num_clips):
    sampler = TRANSFORMS.build(
        dict(type='SampleFrames', num_clips=num_clips, test_mode=True,
             **kwargs))
    out = sampler(dict(total_frames=total, avg_fps=fps, start_index=0))
    clips = out['frame_inds'].reshape(num_clips, -1)
    # SampleFrames._get_test_clips: where its clips start.
    max_offset = max(total - clip_span(sampler, fps), 0)
    if num_clips == 1:
        offsets = [max_offset // 2]
    elif 'target_fps' in kwargs:
        offsets = np.arange(num_clips) * np.floor(max_offset /
                                                  (num_clips - 1))
    else:
        offsets = np.round(np.arange(num_clips) * max_offset /
                           (num_clips - 1))
    for clip, offset in zip(clips, offsets):
        np.testing.assert_array_equal(
            clip_frame_indices(sampler, offset, total, fps), clip)


def test_clip_frame_indices_values():
    # SampleFrames has no frame-rate resampling by default: every 3rd frame.
    sample = TRANSFORMS.build(dict(type='SampleFrames', clip_len=4,
                                   frame_interval=3))
    assert clip_span(sample, 10.0) == 10
    assert clip_frame_indices(sample, 20, 40, 10.0).tolist() == [
        20, 23, 26, 29]
    assert clip_frame_indices(sample, 35, 40, 10.0).tolist() == [
        35, 38, 1, 4]  # out_of_bound_opt='loop'
    # SlowFastSampleFrames at 30 fps on a 10 fps file: 4 x 5 frames at 30
    # fps are 20 / 3 frames of the file.
    slowfast = SlowFastSampleFrames(4, 5)
    assert clip_span(slowfast, 10.0) == pytest.approx(20 / 3)
    assert clip_frame_indices(slowfast, 0, 40, 10.0).tolist() == [0, 1, 3, 5]
    assert clip_frame_indices(slowfast, 36, 40, 10.0).tolist() == [
        36, 37, 39, 39]  # clamped
    # No frame rate known: no resampling.
    assert clip_span(slowfast, 0) == 20


def test_clip_frame_indices_reject_other_samplers():
    dense = TRANSFORMS.build(dict(type='DenseSampleFrames', clip_len=4))
    with pytest.raises(TypeError, match='SlowFastSampleFrames or'):
        clip_span(dense, 30.0)
    jitter = TRANSFORMS.build(dict(type='SampleFrames', clip_len=4,
                                   temporal_jitter=True))
    with pytest.raises(ValueError, match='temporal_jitter'):
        clip_frame_indices(jitter, 0, 40, 30.0)


def pipeline_from(config, name, **overrides):
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    steps = []
    for step in cfg[name]:
        step = dict(step)
        step.update(overrides.get(step['type'], {}))
        steps.append(step)
    return Compose([TRANSFORMS.build(s) for s in steps])


REAL_CLIPS = ['arm_wrestling.mp4', 'flipping_pancake.mkv',
              'apply_eye_makeup.avi', 'drink_water_1080p.avi']


@pytest.mark.parametrize('clip', REAL_CLIPS + ['portrait'])
def test_real_clips_through_x3d_pipelines(shared_dir, clip):
    if clip == 'portrait':
        tiny = shared_dir / 'data/kinetics_tiny2'
        clip_path = None
        for line in (tiny / 'test.txt').read_text().splitlines():
            candidate = tiny / line.split()[0]
            import av
            with av.open(str(candidate)) as c:
                s = first_video_stream(c)
                if s.height > s.width:
                    clip_path = candidate
                    break
        if clip_path is None:
            pytest.skip('no portrait clip in kinetics_tiny2/test.txt')
    else:
        clip_path = shared_dir / 'data/real_clips' / clip
    train = pipeline_from('x3d_xs_k400.py', 'train_pipeline')
    out = train(dict(filename=str(clip_path), label=0, start_index=0,
                     modality='RGB'))
    assert tuple(out['inputs'].shape) == (1, 3, 4, 160, 160)
    test = pipeline_from(
        'x3d_xs_k400.py',
        'test_pipeline',
        **{'x3d_plugin.SlowFastSampleFrames': dict(num_clips=2)})
    out = test(dict(filename=str(clip_path), label=0, start_index=0,
                    modality='RGB'))
    # 2 clips x 3 crops of 4 frames at 182 x 182.
    assert tuple(out['inputs'].shape) == (6, 3, 4, 182, 182)
    assert out['inputs'].float().std() > 1  # real picture content
