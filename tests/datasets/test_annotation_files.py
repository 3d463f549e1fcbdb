"""Annotation lists and label maps as people write them: byte order marks,
Windows/old-Mac line ends, blank lines, trailing white space, names with
spaces and non-ASCII letters, tabs; and the errors for what cannot be read
(a non-UTF-8 byte, UTF-16), each naming ``file:line`` and the fix."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from x3d_plugin.datasets import (AnnotationError, CheckedVideoDataset,
                                 read_annotation_list, read_label_map)
from x3d_plugin.datasets.annotations import read_lines
from x3d_plugin.datasets.demo_data import render_video, write_video

NAMES = [
    'a.mp4', 'folder with spaces/b c.mp4', 'vidéos/ünïcödé 視頻.mp4',
    'tabbed.mp4'
]
LINES = [
    'a.mp4 0', 'folder with spaces/b c.mp4 1  ',
    'vidéos/ünïcödé 視頻.mp4 2\t',
    'tabbed.mp4\t3'
]


@pytest.mark.parametrize('bom', [b'', b'\xef\xbb\xbf'], ids=['nobom', 'bom'])
@pytest.mark.parametrize('newline', ['\n', '\r\n', '\r'],
                         ids=['LF', 'CRLF', 'CR'])
def test_list_forms_read_the_same(tmp_path, bom, newline):
    path = tmp_path / 'list.txt'
    # A blank line and one of spaces only, which are skipped.
    text = newline.join(LINES[:2] + ['', '   '] + LINES[2:]) + newline
    path.write_bytes(bom + text.encode('utf-8'))
    entries = read_annotation_list(str(path), num_classes=4)
    assert entries == [(1, NAMES[0], 0), (2, NAMES[1], 1), (5, NAMES[2], 2),
                       (6, NAMES[3], 3)]


def test_tab_delimiter(tmp_path):
    path = tmp_path / 'list.txt'
    path.write_text('name with spaces.mp4\t7\nx.mp4\t0\n', encoding='utf-8')
    assert read_annotation_list(str(path), delimiter='\t') == [
        (1, 'name with spaces.mp4', 7), (2, 'x.mp4', 0)
    ]


def test_read_as_utf8_under_an_ascii_locale(tmp_path):
    path = tmp_path / 'list.txt'
    path.write_bytes('\ufeffvidéos/ünï 視頻.mp4 2\r\n'.encode('utf-8'))
    # The module alone (it imports nothing of the package), under the C
    # locale without Python's UTF-8 coercion: open() would default to ASCII.
    code = ('import importlib.util, sys, locale\n'
            'assert locale.getpreferredencoding(False).lower() in '
            '("ansi_x3.4-1968", "ascii", "us-ascii"), '
            'locale.getpreferredencoding(False)\n'
            'spec = importlib.util.spec_from_file_location("a", sys.argv[1])\n'
            'm = importlib.util.module_from_spec(spec)\n'
            'spec.loader.exec_module(m)\n'
            'print(ascii(m.read_annotation_list(sys.argv[2])))\n')
    env = dict(os.environ,
               LC_ALL='C',
               LANG='C',
               PYTHONUTF8='0',
               PYTHONCOERCECLOCALE='0')
    proc = subprocess.run([
        sys.executable, '-c', code,
        str(ROOT / 'x3d_plugin' / 'datasets' / 'annotations.py'),
        str(path)
    ],
                          env=env,
                          capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ascii([(1, 'vidéos/ünï 視頻.mp4', 2)])


@pytest.mark.parametrize('line, message', [
    ('just_a_name.mp4', 'expected "path label", got \'just_a_name.mp4\''),
    ('a.mp4 one', "label 'one' is not an integer"),
    ('a.mp4 9', 'label 9 is outside 0..3'),
    ('a.mp4 -1', 'label -1 is outside 0..3'),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / 'list.txt'
    path.write_text(f'ok.mp4 1\r\n\r\n{line}\r\n', encoding='utf-8')
    with pytest.raises(AnnotationError) as info:
        read_annotation_list(str(path), num_classes=4)
    assert f'{path}:3: {message}' in str(info.value)
    assert str(info.value).startswith(f'1 bad lines in {path}')


def test_non_utf8_byte_names_line_column_and_fix(tmp_path):
    path = tmp_path / 'list.txt'
    path.write_bytes('ok.mp4 0\ncafé.mp4 1\n'.encode('latin-1'))
    with pytest.raises(AnnotationError) as info:
        read_annotation_list(str(path))
    assert str(info.value) == (
        f'{path}:2: byte 0xe9 at column 4 is not UTF-8; save the file as '
        'UTF-8 (e.g. `iconv -f LATIN1 -t UTF-8`)')


def test_utf16_is_named(tmp_path):
    path = tmp_path / 'list.txt'
    path.write_bytes('a.mp4 0\r\n'.encode('utf-16'))  # with its BOM
    with pytest.raises(AnnotationError,
                       match='is UTF-16 text; save it as '
                       'UTF-8'):
        read_annotation_list(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match='does not exist'):
        read_lines(str(tmp_path / 'nope.txt'))


def test_label_maps(tmp_path):
    path = tmp_path / 'labels.txt'
    path.write_bytes(b'\xef\xbb\xbfmoving right  \r\n\r\nt\xc3\xa9l\xc3\xa9'
                     b'phone\r\nwaving hands\r\n')
    assert read_label_map(
        str(path)) == ['moving right', 'téléphone', 'waving hands']
    assert read_label_map(str(path), num_classes=3)[1] == 'téléphone'
    with pytest.raises(AnnotationError) as info:
        read_label_map(str(path), num_classes=400)
    assert str(info.value) == (
        f"label map {str(path)!r} has 3 class names but there are 400 "
        'classes; give one name per class, one a line')
    empty = tmp_path / 'empty.txt'
    empty.write_text('\n \n')
    with pytest.raises(AnnotationError, match='has no class names'):
        read_label_map(str(empty))


def test_annotation_error_is_still_importable_from_video_dataset():
    from x3d_plugin.datasets import video_dataset
    assert video_dataset.AnnotationError is AnnotationError
    assert issubclass(AnnotationError, ValueError)


def test_video_under_spaces_and_non_ascii_decodes_through_dataset(tmp_path):
    folder = tmp_path / 'my vidéos' / 'ünï 視頻'
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_video(folder / 'clip one é.mp4', render_video(2, rng, 16))
    ann = tmp_path / 'list.txt'
    ann.write_bytes(b'\xef\xbb\xbf' +
                    'ünï 視頻/clip one é.mp4 2  \r\n\r\n'.encode('utf-8'))
    dataset = CheckedVideoDataset(
        ann_file=str(ann),
        data_prefix=dict(video=str(tmp_path / 'my vidéos')),
        num_classes=3,
        pipeline=[
            dict(type='x3d_plugin.PyAVInitAtScale', short_side=32),
            dict(type='x3d_plugin.SlowFastSampleFrames',
                 clip_len=4,
                 frame_interval=2,
                 target_fps=None,
                 test_mode=True),
            dict(type='x3d_plugin.PyAVSparseDecode'),
            dict(type='CenterCrop', crop_size=32),
            dict(type='FormatShape', input_format='NCTHW'),
            dict(type='PackActionInputs')
        ],
        test_mode=True)
    assert len(dataset) == 1
    item = dataset[0]
    assert tuple(item['inputs'].shape) == (1, 3, 4, 32, 32)
    assert int(item['data_samples'].gt_label) == 2
