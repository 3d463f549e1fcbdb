"""The command lines of tools/data: the Kinetics list builder and the
re-encoder (smaller copies that the annotation lists still reach; failures
reported; runs resume)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from utils_helpers import smooth_frames
from x3d_plugin.datasets import MissingPackageError
from x3d_plugin.datasets.demo_data import write_video
from x3d_plugin.datasets.reencode import describe


def load_tool(*parts):
    path = ROOT.joinpath('tools', 'data', *parts)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kinetics_list_builder(tmp_path, shared_dir):
    label_map = ROOT / 'configs' / 'label_map_k400.txt'
    classes = label_map.read_text().splitlines()
    assert len(classes) == 400
    assert (classes[0], classes[6], classes[129]) == (
        'abseiling', 'arm wrestling', 'flipping pancake')
    videos = tmp_path / 'videos_val'
    (videos / 'arm wrestling').mkdir(parents=True)
    real = shared_dir / 'data/real_clips'
    (videos / 'arm wrestling' / 'aaa_000010_000020.mp4').write_bytes(
        (real / 'arm_wrestling.mp4').read_bytes())
    (videos / 'bbb_000001_000011.mkv').write_bytes(
        (real / 'flipping_pancake.mkv').read_bytes())
    (videos / 'ccc_000000_000010.mp4').write_bytes(b'not a video')
    csv = tmp_path / 'validate.csv'
    csv.write_text('label,youtube_id,time_start,time_end,split\n'
                   'arm wrestling,aaa,10,20,val\n'
                   'flipping pancake,bbb,1,11,val\n'
                   'abseiling,ccc,0,10,val\n'
                   'abseiling,ddd,5,15,val\n')
    out = tmp_path / 'k400_val.txt'
    proc = subprocess.run([
        sys.executable, 'tools/data/kinetics/build_file_list.py', str(csv),
        str(videos), str(out), '--check-readable', '--workers', '1'
    ], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().splitlines() == [
        'arm wrestling/aaa_000010_000020.mp4 6',
        'bbb_000001_000011.mkv 129']
    assert Path(f'{out}.missing.txt').read_text().split() == [
        'ddd_000005_000015']
    unreadable = Path(f'{out}.unreadable.txt').read_text().splitlines()
    assert len(unreadable) == 1
    rel, reason = unreadable[0].split('\t')
    assert rel == 'ccc_000000_000010.mp4'
    assert reason.startswith('InvalidDataError: ')
    assert '1 clips of the CSV not found' in proc.stdout
    assert '1 clips unreadable' in proc.stdout


def test_kinetics_readable_check_raises_a_missing_package(tmp_path,
                                                          monkeypatch):
    """Without PyAV every clip would be 'unreadable': the check stops with
    the install command instead."""
    tool = load_tool('kinetics', 'build_file_list.py')
    clip = tmp_path / 'clip.mp4'
    write_video(clip, smooth_frames(6, 32, 32), fps=10)
    assert tool.readable(str(clip)) is None
    assert tool.readable(str(tmp_path / 'gone.mp4')).startswith(
        'FileNotFoundError: ')
    monkeypatch.setitem(sys.modules, 'av', None)
    with pytest.raises(MissingPackageError, match='pip install av'):
        tool.readable(str(clip))


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


def test_reencode_folder(tmp_path, video_folder, capsys):
    src, ann = video_folder
    out = tmp_path / 'out'
    tool = load_tool('reencode_videos.py')
    args = [str(src), str(out), '--ann-files', str(ann), '--short-side',
            '32', '--keyint', '8', '--workers', '2']
    assert tool.main(args) == 1  # one video failed
    # The failure is reported, the rest is done and listed.
    report = (out / 'reencode_failures.tsv').read_text().splitlines()
    assert len(report) == 1 and report[0].startswith('broken.mp4\t')
    assert 'FAILED broken.mp4: ' in capsys.readouterr().out
    assert (out / 'train.txt').read_text() == 'a.mp4 0\nsub/b.mp4 1\n'
    assert not list(out.rglob('*.part'))
    assert describe(str(out / 'a.mp4')) == dict(
        height=32, width=48, frames=40, max_keyframe_gap=8)
    assert describe(str(out / 'sub/b.mp4')) == dict(
        height=42, width=32, frames=30, max_keyframe_gap=8)
    assert describe(str(src / 'a.mp4'))['max_keyframe_gap'] == 40

    # Resume: done videos are kept as they are, the fixed one is done.
    stamp = os.stat(out / 'a.mp4').st_mtime_ns
    write_video(src / 'broken.mp4', smooth_frames(12, 48, 64), fps=10)
    assert tool.main(args) == 0
    assert os.stat(out / 'a.mp4').st_mtime_ns == stamp
    assert not (out / 'reencode_failures.tsv').exists()
    assert (out / 'train.txt').read_text().splitlines() == [
        'a.mp4 0', 'sub/b.mp4 1', 'broken.mp4 2']
    assert describe(str(out / 'broken.mp4')) == dict(
        height=32, width=42, frames=12, max_keyframe_gap=8)


def test_reencode_without_av_stops_before_any_work(tmp_path, video_folder,
                                                   monkeypatch):
    src, ann = video_folder
    tool = load_tool('reencode_videos.py')
    monkeypatch.setitem(sys.modules, 'av', None)
    with pytest.raises(MissingPackageError, match='pip install av'):
        tool.main([str(src), str(tmp_path / 'out'), '--workers', '1'])
    assert not (tmp_path / 'out').exists()


def test_bad_arguments_are_named(tmp_path, capsys):
    tool = load_tool('reencode_videos.py')
    with pytest.raises(SystemExit) as info:
        tool.main([str(tmp_path / 'nowhere'), str(tmp_path / 'out')])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert 'source folder' in err and 'nowhere' in err and (
        'does not exist' in err)
    with pytest.raises(SystemExit) as info:
        tool.main([str(tmp_path), str(tmp_path / 'out'), '--ann-files',
                   str(tmp_path / 'list.txt')])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert 'annotation list' in err and 'list.txt' in err and (
        'does not exist' in err)
    with pytest.raises(SystemExit) as info:
        tool.main([str(tmp_path), str(tmp_path / 'out'), '--keyint', '0'])
    assert info.value.code == 2
    assert '--keyint and --workers must be >= 1' in capsys.readouterr().err
