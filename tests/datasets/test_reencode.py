"""x3d_plugin.datasets.reencode: smaller, keyframe-dense copies of the same
pictures; a bad video is reported, a missing package is raised."""
import os
import sys

import numpy as np
import pytest

from utils_helpers import smooth_frames
from x3d_plugin.datasets import MissingPackageError
from x3d_plugin.datasets.demo_data import write_video
from x3d_plugin.datasets.reencode import (describe, output_size,
                                          reencode_job, reencode_video,
                                          reencoded_name)
from x3d_plugin.datasets.transforms import SparseVideoReader


def test_output_size():
    assert output_size(1080, 1920, 320) == (320, 568)
    assert output_size(1350, 1080, 320) == (400, 320)
    assert output_size(240, 320, 320) == (240, 320)  # never enlarged
    assert output_size(241, 321, 0) == (240, 320)  # even for yuv420p
    assert output_size(241, 321, 400) == (240, 320)


def test_reencoded_name():
    assert reencoded_name('sub/clip.mkv') == 'sub/clip.mp4'
    assert reencoded_name('a.b.avi') == 'a.b.mp4'


@pytest.fixture(scope='module')
def long_gop_video(tmp_path_factory):
    """40 frames at 20 fps, 64x96, one keyframe."""
    path = tmp_path_factory.mktemp('reencode') / 'a.mp4'
    write_video(path, smooth_frames(40, 64, 96), fps=20,
                options={'g': '40', 'keyint_min': '40', 'sc_threshold': '0'})
    return str(path)


def test_reencode_video_keeps_the_pictures(tmp_path, long_gop_video):
    dst = str(tmp_path / 'out' / 'a.mp4')
    info = reencode_video(long_gop_video, dst, short_side=32, keyint=8)
    assert info == dict(frames=40, height=32, width=48)
    assert not os.path.exists(dst + '.part')
    assert describe(long_gop_video) == dict(
        height=64, width=96, frames=40, max_keyframe_gap=40)
    assert describe(dst) == dict(
        height=32, width=48, frames=40, max_keyframe_gap=8)
    # Same pictures, smaller: frame 25 of the copy against frame 25 (and,
    # to show the check can fail, frame 30) of the original scaled alike.
    original = SparseVideoReader(long_gop_video)
    copy = SparseVideoReader(dst)
    assert copy.fps == pytest.approx(20)
    same, other = original.get_batch([25, 30], size=(32, 48)).astype(float)
    new = copy.get_batch([25])[0].astype(float)
    # (x264 at crf 23 on a 48x32 picture of fine waves: measured 7.5
    # against the same frame, 74 against the other.)
    assert np.abs(new - same).mean() < 10
    assert np.abs(new - other).mean() > 3 * np.abs(new - same).mean()


def test_bad_video_is_reported_not_raised(tmp_path):
    bad = tmp_path / 'broken.mp4'
    bad.write_bytes(b'\x00\x00\x00\x18ftypmp42' + os.urandom(2000))
    dst = str(tmp_path / 'out' / 'broken.mp4')
    result = reencode_job((str(bad), dst, dict(short_side=32)))
    assert result['ok'] is False and result['src'] == str(bad)
    assert result['error'].startswith(('InvalidDataError: ',
                                       'VideoDecodeError: '))
    assert '\n' not in result['error']
    assert not os.path.exists(dst) and not os.path.exists(dst + '.part')
    assert describe(str(bad)) is None


def test_missing_av_is_raised_not_reported(tmp_path, long_gop_video,
                                           monkeypatch):
    monkeypatch.setitem(sys.modules, 'av', None)
    with pytest.raises(MissingPackageError, match='pip install av'):
        reencode_job((long_gop_video, str(tmp_path / 'a.mp4'), {}))
