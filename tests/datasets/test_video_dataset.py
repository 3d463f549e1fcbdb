"""CheckedVideoDataset: a bad annotation list is an error naming the file
and line when the dataset is built."""
import pytest

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
    with pytest.raises(AnnotationError,
                       match='(?s)^1 bad lines in .*' + message):
        make_dataset(ann, tmp_path)


def test_many_bad_lines_are_counted_and_ten_shown(tmp_path):
    ann = tmp_path / 'train.txt'
    ann.write_text(''.join(f'v{i}.mp4 x\n' for i in range(12)))
    with pytest.raises(AnnotationError) as info:
        make_dataset(ann, tmp_path)
    message = str(info.value)
    assert message.startswith('12 bad lines in ')
    assert 'train.txt:10:' in message and 'train.txt:11:' not in message
    assert message.endswith('... and 2 more')


def test_good_annotation_list_loads(tmp_path):
    (tmp_path / 'a b.mp4').write_bytes(b'')
    (tmp_path / 'c.mp4').write_bytes(b'')
    ann = tmp_path / 'train.txt'
    ann.write_text('a b.mp4 2\n\nc.mp4 0\n')
    dataset = make_dataset(ann, tmp_path)
    assert len(dataset) == 2
    assert [(dataset.get_data_info(i)['filename'],
             dataset.get_data_info(i)['label']) for i in range(2)] == [
        (str(tmp_path / 'a b.mp4'), 2), (str(tmp_path / 'c.mp4'), 0)]


def test_missing_files_pass_when_not_checked(tmp_path):
    ann = tmp_path / 'train.txt'
    ann.write_text('gone.mp4 1\n')
    dataset = CheckedVideoDataset(
        ann_file=str(ann), data_prefix=dict(video=str(tmp_path)),
        num_classes=3, pipeline=[], check_files=False)
    assert dataset.get_data_info(0)['filename'] == str(tmp_path / 'gone.mp4')


def test_missing_list_says_where_kinetics_goes(tmp_path):
    with pytest.raises(
            AnnotationError,
            match="'.*nope.txt' does not exist.*build_file_list.py"):
        make_dataset(tmp_path / 'nope.txt', tmp_path)


def test_empty_list_is_an_error(tmp_path):
    ann = tmp_path / 'train.txt'
    ann.write_text('\n\n')
    with pytest.raises(AnnotationError, match='train.txt.* is empty'):
        make_dataset(ann, tmp_path)
