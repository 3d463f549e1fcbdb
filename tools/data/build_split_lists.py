"""Build MMAction2 annotation lists for UCF101 or HMDB51 from the official
split files.

The files are those MMAction2's ``tools/data/{ucf101,hmdb51}/
download_annotations.sh`` put in ``data/{ucf101,hmdb51}/annotations``:

* UCF101: ``classInd.txt`` (``<index from 1> <class>``),
  ``trainlist0K.txt`` (``<class>/<video>.avi <index from 1>``) and
  ``testlist0K.txt`` (``<class>/<video>.avi``).
* HMDB51: ``<class>_test_splitK.txt`` for each of the 51 classes, lines
  ``<video>.avi <mark>`` with mark 1 = training, 2 = testing, 0 = not in
  this split. Classes are numbered in sorted order of their names.

For each split K it writes ``OUT_DIR/{dataset}_train_split_K_videos.txt``
and ``OUT_DIR/{dataset}_val_split_K_videos.txt`` (the official test list;
the datasets have no separate validation set), lines ``<class>/<video>
<label from 0>`` relative to the videos folder, as MMAction2's
``build_file_list.py --format videos`` writes them, and
``OUT_DIR/label_map_{dataset}.txt`` (class names in label order, for
``tools/infer.py --label-map``).

Example::

    python tools/data/build_split_lists.py ucf101 data/ucf101/annotations \\
        --videos data/ucf101/videos --out-dir data/ucf101
    python tools/data/build_split_lists.py hmdb51 data/hmdb51/annotations \\
        --videos data/hmdb51/videos --out-dir data/hmdb51 --splits 1 2 3

With ``--videos``, videos named by the split files but not found there are
left out, counted, and listed in ``OUT.missing.txt``.
"""
import argparse
import os.path as osp
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from x3d_plugin.datasets.annotations import (  # noqa: E402
    AnnotationError, read_lines)

DATASETS = ('ucf101', 'hmdb51')
HMDB51_MARKS = {'1': 'train', '2': 'val'}


class SplitFileError(ValueError):
    """A split file is missing or malformed; the message names it."""


def _lines(path):
    try:
        return read_lines(str(path))
    except AnnotationError as err:
        raise SplitFileError(str(err)) from None


def _need(path, what):
    if not osp.isfile(path):
        raise SplitFileError(
            f'{what} {str(path)!r} does not exist; download the official '
            'split files (MMAction2 tools/data/<dataset>/'
            'download_annotations.sh) and pass their folder')
    return path


def ucf101_classes(ann_dir):
    """Class names of UCF101's ``classInd.txt`` in label order."""
    path = _need(Path(ann_dir) / 'classInd.txt', 'UCF101 class index')
    classes = {}
    for lineno, text in _lines(path):
        fields = text.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise SplitFileError(f'{path}:{lineno}: expected "<index> '
                                 f'<class>", got {text!r}')
        classes[int(fields[0])] = fields[1]
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise SplitFileError(f'{path}: class indices must run 1..N without '
                             'gaps')
    return [classes[i] for i in sorted(classes)]


def ucf101_split(ann_dir, split):
    """``{'train': [(video, label)], 'val': [...]}`` and the classes of
    UCF101 split ``split``."""
    ann_dir = Path(ann_dir)
    classes = ucf101_classes(ann_dir)
    index = {name: i for i, name in enumerate(classes)}
    result = {}
    for part, name in (('train', f'trainlist{split:02d}.txt'),
                       ('val', f'testlist{split:02d}.txt')):
        path = _need(ann_dir / name, f'UCF101 split {split} list')
        entries = []
        for lineno, text in _lines(path):
            fields = text.split()
            video = fields[0].replace('\\', '/')
            folder = video.split('/')[0] if '/' in video else None
            if folder not in index:
                raise SplitFileError(
                    f'{path}:{lineno}: {video!r} is not in a class folder '
                    'named in classInd.txt')
            label = index[folder]
            if len(fields) > 1 and not fields[1].isdigit():
                raise SplitFileError(
                    f'{path}:{lineno}: expected "<class>/<video> '
                    f'[<index>]", got {text!r}')
            if len(fields) > 1 and int(fields[1]) - 1 != label:
                raise SplitFileError(
                    f'{path}:{lineno}: index {fields[1]} disagrees with '
                    f'classInd.txt, where {folder!r} is {label + 1}')
            entries.append((video, label))
        result[part] = entries
    return result, classes


def hmdb51_split(ann_dir, split):
    """``{'train': [(video, label)], 'val': [...]}`` and the classes of
    HMDB51 split ``split``."""
    ann_dir = Path(ann_dir)
    pattern = re.compile(rf'^(.+)_test_split{split}\.txt$')
    files = {}
    if ann_dir.is_dir():
        for path in ann_dir.iterdir():
            match = pattern.match(path.name)
            if match:
                files[match.group(1)] = path
    if not files:
        raise SplitFileError(
            f'no <class>_test_split{split}.txt files in {str(ann_dir)!r}; '
            'download the official split files (MMAction2 '
            'tools/data/hmdb51/download_annotations.sh) and pass their '
            'folder')
    classes = sorted(files)
    result = {'train': [], 'val': []}
    for label, name in enumerate(classes):
        path = files[name]
        for lineno, text in _lines(path):
            fields = text.split()
            if len(fields) != 2 or fields[1] not in ('0', '1', '2'):
                raise SplitFileError(
                    f'{path}:{lineno}: expected "<video> <0|1|2>", got '
                    f'{text!r}')
            part = HMDB51_MARKS.get(fields[1])
            if part:
                result[part].append((f'{name}/{fields[0]}', label))
    return result, classes


PARSERS = dict(ucf101=ucf101_split, hmdb51=hmdb51_split)


def build(dataset, ann_dir, out_dir, splits=(1, ), videos=None):
    """Write the lists of ``splits`` and the label map.

    Args:
        dataset (str): ``'ucf101'`` or ``'hmdb51'``.
        ann_dir (str): Folder of the official split files.
        out_dir (str): Where the lists go.
        splits (Sequence[int]): Split numbers (1, 2, 3).
        videos (str, optional): The videos folder; listed videos missing
            from it are left out.

    Returns:
        dict: list path -> ``(videos listed, videos missing)``, plus
        ``'label_map'`` -> its path.

    Raises:
        SplitFileError: A split file is missing or malformed, or the videos
            folder holds none of the split's videos.
    """
    if dataset not in PARSERS:
        raise ValueError(f'dataset must be one of {DATASETS}, got '
                         f'{dataset!r}')
    if videos is not None and not osp.isdir(videos):
        raise SplitFileError(f'videos folder {videos!r} does not exist')
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    classes = None
    for split in splits:
        parts, split_classes = PARSERS[dataset](ann_dir, split)
        if classes is not None and split_classes != classes:
            raise SplitFileError(f'split {split} has other classes than '
                                 f'split {splits[0]}')
        classes = split_classes
        for part, entries in parts.items():
            out = out_dir / f'{dataset}_{part}_split_{split}_videos.txt'
            missing = []
            if videos is not None:
                missing = [v for v, _ in entries
                           if not osp.isfile(osp.join(videos, v))]
                if len(missing) == len(entries):
                    raise SplitFileError(
                        f'none of the {len(entries)} videos of {out.name} '
                        f'is in {videos!r} (e.g. {entries[0][0]}); pass the '
                        'folder that holds the class folders')
                gone = set(missing)
                entries = [e for e in entries if e[0] not in gone]
                Path(f'{out}.missing.txt').unlink(missing_ok=True)
                if missing:
                    Path(f'{out}.missing.txt').write_text(
                        ''.join(f'{v}\n' for v in missing), encoding='utf-8')
            out.write_text(''.join(f'{v} {label}\n' for v, label in entries),
                           encoding='utf-8')
            report[str(out)] = (len(entries), len(missing))
    label_map = out_dir / f'label_map_{dataset}.txt'
    label_map.write_text(''.join(f'{n}\n' for n in classes), encoding='utf-8')
    report['label_map'] = str(label_map)
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset', choices=DATASETS)
    parser.add_argument('ann_dir', help='folder of the official split files')
    parser.add_argument(
        '--out-dir',
        help='where the lists go (default: the parent of ANN_DIR, e.g. '
        'data/ucf101)')
    parser.add_argument(
        '--splits',
        type=int,
        nargs='+',
        default=[1],
        choices=[1, 2, 3],
        help='official splits to write (default: 1)')
    parser.add_argument(
        '--videos',
        help='videos folder (class sub-folders); listed videos not found '
        'there are left out and reported')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    out_dir = args.out_dir or osp.dirname(osp.abspath(args.ann_dir))
    try:
        report = build(args.dataset, args.ann_dir, out_dir, args.splits,
                       args.videos)
    except SplitFileError as err:
        sys.exit(f'error: {err}')
    label_map = report.pop('label_map')
    for path, (listed, missing) in report.items():
        note = (f', {missing} not found in {args.videos} (list: '
                f'{path}.missing.txt)' if missing else '')
        print(f'{path}: {listed} videos{note}')
    print(f'{label_map}: class names in label order')


if __name__ == '__main__':
    main()
