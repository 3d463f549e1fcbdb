"""Video loading transforms: fast decode, PySlowFast sampling, bad videos,
jitter, and the real clips of shared/data through the X3D pipelines."""
import os
from pathlib import Path

import numpy as np
import pytest
from mmaction.registry import TRANSFORMS
from mmengine.config import Config
from mmengine.dataset import Compose

from conftest import ROOT
from x3d_plugin.datasets.transforms import (DecordInitAtScale,
                                            PyAVInitAtScale,
                                            PyAVSparseDecode,
                                            RobustDecordDecode,
                                            SlowFastSampleFrames,
                                            VideoDecodeError)
from x3d_plugin.datasets.transforms.loading import SKIP_LOG_ENV
from utils_helpers import smooth_frames
from x3d_plugin.utils.demo_data import write_video


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
    path.write_bytes(b'\x00\x00\x00\x18ftypmp42' + os.urandom(3000))


@pytest.mark.parametrize('loader', sorted(LOADERS))
def test_bad_video_raises_naming_the_file_in_test_mode(tmp_path, loader):
    init = LOADERS[loader][0]
    bad = tmp_path / 'broken.mp4'
    write_corrupt(bad)
    with pytest.raises(VideoDecodeError, match='broken.mp4'):
        init(short_side=32)(dict(filename=str(bad)))
    with pytest.raises(VideoDecodeError, match='missing.mp4'):
        init()(dict(filename=str(tmp_path / 'missing.mp4')))


@pytest.mark.parametrize('loader', sorted(LOADERS))
def test_corrupt_video_in_training_is_skipped_and_reported(
        tmp_path, small_video, monkeypatch, loader):
    from x3d_plugin.datasets import CheckedVideoDataset
    init, decode = LOADERS[loader]
    write_corrupt(tmp_path / 'broken.mp4')
    (tmp_path / 'good.mp4').write_bytes(Path(small_video).read_bytes())
    ann = tmp_path / 'train.txt'
    ann.write_text('broken.mp4 0\ngood.mp4 1\n')
    log = tmp_path / 'skipped.tsv'
    monkeypatch.setenv(SKIP_LOG_ENV, str(log))
    dataset = CheckedVideoDataset(
        ann_file=str(ann),
        data_prefix=dict(video=str(tmp_path)),
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
    sample = dataset[0]  # the broken one: replaced by the good video
    assert sample['data_samples'].gt_label.item() == 1
    assert sample['inputs'].shape == (1, 3, 4, 32, 43)
    lines = log.read_text().splitlines()
    assert len(lines) >= 1 and all('broken.mp4' in line for line in lines)


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
                s = c.streams.video[0]
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
