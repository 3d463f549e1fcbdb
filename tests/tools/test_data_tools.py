"""Annotation checking and the Kinetics list builder."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from x3d_plugin.datasets import AnnotationError, CheckedVideoDataset


def make_dataset(ann, prefix, num_classes=3):
    return CheckedVideoDataset(
        ann_file=str(ann), data_prefix=dict(video=str(prefix)),
        num_classes=num_classes, pipeline=[])


@pytest.mark.parametrize('line, message', [
    ('a.mp4 x', "train.txt:2: label 'x' is not an integer"),
    ('a.mp4 3', 'train.txt:2: label 3 is outside 0..2'),
    ('gone.mp4 1', "train.txt:2: video '.*gone.mp4' not found"),
    ('a.mp4', 'train.txt:2: expected "path label"'),
])
def test_bad_annotation_line_names_file_and_line(tmp_path, line, message):
    (tmp_path / 'a.mp4').write_bytes(b'')
    ann = tmp_path / 'train.txt'
    ann.write_text(f'a.mp4 0\n{line}\n')
    with pytest.raises(AnnotationError, match=message):
        make_dataset(ann, tmp_path)


def test_good_annotation_list_loads(tmp_path):
    (tmp_path / 'a b.mp4').write_bytes(b'')
    ann = tmp_path / 'train.txt'
    ann.write_text('a b.mp4 2\n\n')
    dataset = make_dataset(ann, tmp_path)
    assert len(dataset) == 1
    info = dataset.get_data_info(0)
    assert info['label'] == 2 and info['filename'].endswith('a b.mp4')


def test_missing_list_says_where_kinetics_goes(tmp_path):
    with pytest.raises(AnnotationError,
                       match='build_file_list.py'):
        make_dataset(tmp_path / 'nope.txt', tmp_path)


def test_kinetics_list_builder(tmp_path, shared_dir):
    label_map = ROOT / 'configs' / 'label_map_k400.txt'
    classes = label_map.read_text().splitlines()
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
    assert 'ccc_000000_000010.mp4' in Path(f'{out}.unreadable.txt').read_text()
    assert '1 clips of the CSV not found' in proc.stdout
    assert '1 clips unreadable' in proc.stdout
