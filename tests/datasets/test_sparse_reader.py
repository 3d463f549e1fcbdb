"""SparseVideoReader: exactly the frames a sequential decode gives, while
decoding fewer of them."""
import sys

import numpy as np
import pytest

from utils_helpers import smooth_frames
from x3d_plugin.datasets import MissingPackageError
from x3d_plugin.datasets.demo_data import write_video
from x3d_plugin.datasets.transforms import SparseVideoReader, VideoDecodeError


def decode_all(filename, size=None):
    """Ground truth: every frame, decoded in order by PyAV."""
    import av
    frames = []
    with av.open(str(filename)) as container:
        for frame in container.decode(video=0):
            if size is None:
                frames.append(frame.to_ndarray(format='rgb24'))
            else:
                frames.append(frame.to_ndarray(
                    width=size[1], height=size[0], format='rgb24',
                    interpolation='AREA'))
    return frames


@pytest.fixture(scope='module')
def long_gop_video(tmp_path_factory):
    """120 frames, keyframes at 0 and 60, B-frames: like a camera file."""
    path = tmp_path_factory.mktemp('sparse') / 'long_gop.mp4'
    write_video(path, smooth_frames(120, 48, 64), fps=30,
                options={'g': '60', 'keyint_min': '60', 'sc_threshold': '0',
                         'bf': '3'})
    return str(path)


def test_frames_equal_sequential_decode(long_gop_video):
    truth = decode_all(long_gop_video)
    reader = SparseVideoReader(long_gop_video)
    assert len(reader) == len(truth) == 120
    assert reader.fps == pytest.approx(30)
    inds = [100, 5, 5, 70, 119, 61, 0]  # any order, repeats, both GOPs
    frames = reader.get_batch(inds)
    assert frames.shape == (7, 48, 64, 3) and frames.dtype == np.uint8
    for frame, i in zip(frames, inds):
        np.testing.assert_array_equal(frame, truth[i])
    # The check can fail: neighbouring frames differ.
    assert np.abs(truth[70].astype(int) - truth[71]).mean() > 1


def test_decodes_only_what_the_clip_needs(long_gop_video):
    reader = SparseVideoReader(long_gop_video)
    truth = decode_all(long_gop_video)
    inds = list(range(96, 112, 5))  # a clip late in the second GOP
    frames = reader.get_batch(inds)
    for frame, i in zip(frames, inds):
        np.testing.assert_array_equal(frame, truth[i])
    # Starts at the keyframe at 60, not at 0; and fewer than the 52 frames
    # 60..111, because unneeded non-reference B-frames are skipped.
    assert reader.decoded_frames < 111 - 60 + 1
    # Two clips far apart: the stretch between them is jumped over.
    reader = SparseVideoReader(long_gop_video)
    reader.get_batch([2, 4, 62, 64])
    assert reader.decoded_frames < 30


def test_frames_at_target_size(long_gop_video):
    reader = SparseVideoReader(long_gop_video)
    truth = decode_all(long_gop_video, size=(24, 32))
    frames = reader.get_batch([3, 90], size=(24, 32))
    assert frames.shape == (2, 24, 32, 3)
    np.testing.assert_array_equal(frames[0], truth[3])
    np.testing.assert_array_equal(frames[1], truth[90])


@pytest.mark.parametrize('clip', [
    'arm_wrestling.mp4', 'flipping_pancake.mkv', 'apply_eye_makeup.avi',
    'drink_water_1080p.avi'
])
def test_real_clips_equal_sequential_decode(shared_dir, clip):
    """Includes an AVI whose timestamps are in decode order although it
    has B-frames (drink_water_1080p.avi): the reader notices and decodes
    sequentially instead of returning wrong frames."""
    path = shared_dir / 'data/real_clips' / clip
    truth = decode_all(path, size=(90, 120))
    reader = SparseVideoReader(str(path))
    assert len(reader) == len(truth)
    rng = np.random.default_rng(0)
    inds = sorted(rng.choice(len(truth), 8, replace=False).tolist())
    frames = reader.get_batch(inds, size=(90, 120))
    for frame, i in zip(frames, inds):
        np.testing.assert_array_equal(frame, truth[i], err_msg=f'frame {i}')


def test_clear_errors(tmp_path, long_gop_video):
    reader = SparseVideoReader(long_gop_video)
    with pytest.raises(IndexError, match='out of range.*long_gop.mp4'):
        reader.get_batch([5, 120])
    with pytest.raises(FileNotFoundError, match='gone.mp4'):
        SparseVideoReader(str(tmp_path / 'gone.mp4'))


def test_missing_av_names_the_install_command(long_gop_video, monkeypatch):
    monkeypatch.setitem(sys.modules, 'av', None)
    with pytest.raises(MissingPackageError) as info:
        SparseVideoReader(long_gop_video)
    assert isinstance(info.value, ImportError)
    assert "'av'" in str(info.value) and '`pip install av`' in str(info.value)


def test_file_without_video_is_a_decode_error(tmp_path):
    import av
    audio = tmp_path / 'audio.mp4'
    with av.open(str(audio), 'w') as container:
        stream = container.add_stream('aac', rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format='fltp', layout='mono')
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(VideoDecodeError, match='no video stream'):
        SparseVideoReader(str(audio))
