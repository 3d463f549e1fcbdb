"""tools/data/reencode_videos.py: smaller, keyframe-dense copies that the
annotation lists still reach; failures reported; runs resume."""
import importlib.util
import os

import numpy as np
import pytest

from conftest import ROOT
from utils_helpers import smooth_frames
from x3d_plugin.datasets.transforms import SparseVideoReader
from x3d_plugin.utils.demo_data import write_video
from x3d_plugin.utils.reencode import describe, output_size


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'reencode_videos', ROOT / 'tools' / 'data' / 'reencode_videos.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_output_size():
    assert output_size(1080, 1920, 320) == (320, 568)
    assert output_size(1350, 1080, 320) == (400, 320)
    assert output_size(240, 320, 320) == (240, 320)  # never enlarged
    assert output_size(241, 321, 0) == (240, 320)  # even for yuv420p


@pytest.fixture
def video_folder(tmp_path):
    src = tmp_path / 'src'
    (src / 'sub').mkdir(parents=True)
    long_gop = {'g': '40', 'keyint_min': '40', 'sc_threshold': '0'}
    write_video(src / 'a.mp4', smooth_frames(40, 64, 96), fps=20,
                options=long_gop)
    write_video(src / 'sub' / 'b.mkv', smooth_frames(30, 80, 60)[:, :, ::-1],
                fps=25, options=long_gop)
    (src / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' +
                                     os.urandom(2000))
    ann = tmp_path / 'train.txt'
    ann.write_text('a.mp4 0\nsub/b.mkv 1\nbroken.mp4 2\n')
    return src, ann


def test_reencode_folder(tmp_path, video_folder):
    src, ann = video_folder
    out = tmp_path / 'out'
    tool = load_tool()
    args = [str(src), str(out), '--ann-files', str(ann), '--short-side',
            '32', '--keyint', '8', '--workers', '2']
    assert tool.main(args) == 1  # one video failed
    # The failure is reported, the rest is done and listed.
    report = (out / 'reencode_failures.tsv').read_text().splitlines()
    assert len(report) == 1 and report[0].startswith('broken.mp4\t')
    assert (out / 'train.txt').read_text() == 'a.mp4 0\nsub/b.mp4 1\n'
    assert not list(out.rglob('*.part'))
    a, b = describe(str(out / 'a.mp4')), describe(str(out / 'sub/b.mp4'))
    assert (a['height'], a['width'], a['frames']) == (32, 48, 40)
    assert (b['height'], b['width'], b['frames']) == (42, 32, 30)
    assert describe(str(src / 'a.mp4'))['max_keyframe_gap'] == 40
    assert a['max_keyframe_gap'] == 8 and b['max_keyframe_gap'] == 8
    # Same pictures, smaller: frame 25 of the copy against frame 25 (and,
    # to show the check can fail, frame 30) of the original scaled alike.
    original = SparseVideoReader(str(src / 'a.mp4'))
    copy = SparseVideoReader(str(out / 'a.mp4'))
    assert copy.fps == pytest.approx(20)
    same, other = original.get_batch([25, 30], size=(32, 48)).astype(float)
    new = copy.get_batch([25])[0].astype(float)
    # (x264 at crf 23 on a 48x32 picture of fine waves: measured 7.5
    # against the same frame, 74 against the other.)
    assert np.abs(new - same).mean() < 10
    assert np.abs(new - other).mean() > 3 * np.abs(new - same).mean()

    # Resume: done videos are kept as they are, the fixed one is done.
    stamp = os.stat(out / 'a.mp4').st_mtime_ns
    write_video(src / 'broken.mp4', smooth_frames(12, 48, 64), fps=10)
    assert tool.main(args) == 0
    assert os.stat(out / 'a.mp4').st_mtime_ns == stamp
    assert not (out / 'reencode_failures.tsv').exists()
    assert (out / 'train.txt').read_text().splitlines()[2] == 'broken.mp4 2'
    assert describe(str(out / 'broken.mp4'))['height'] == 32


def test_bad_arguments_are_named(tmp_path, capsys):
    tool = load_tool()
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'nowhere'), str(tmp_path / 'out')])
    assert 'nowhere' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path), str(tmp_path / 'out'), '--ann-files',
                   str(tmp_path / 'list.txt')])
    assert 'list.txt' in capsys.readouterr().err
