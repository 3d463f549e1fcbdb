"""Build MMAction2 annotation lists and a label map from a folder of class
sub-folders (``ROOT/<class name>/<video>``), for fine-tuning on your own
videos.

Classes are the sub-folders of ROOT in sorted order (class ``i`` is line
``i`` of the label map). Each class's videos are split into training and
validation (and, with ``--test-ratio``, test) by a shuffle seeded with
``--seed`` and the class name, so the same folder and seed always give the
same lists, and adding a class does not move the videos of another.

Example::

    python tools/data/build_folder_lists.py data/my_videos \\
        --val-ratio 0.2 --seed 0

writes ``data/my_videos/{train,val}_list_videos.txt`` (lines
``<class>/<video> <label>``, paths relative to ROOT, the layout of
``configs/finetune/*_my-folder.py``) and ``data/my_videos/label_map.txt``.
Videos may sit deeper inside a class folder; files whose extension is not
a video's (``--ext``) and hidden files are ignored.
"""
import argparse
import os
import os.path as osp
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from x3d_plugin.datasets.reencode import VIDEO_EXTENSIONS  # noqa: E402

SPLITS = ('train', 'val', 'test')


class FolderError(ValueError):
    """The folder cannot give annotation lists (no classes, empty classes,
    a bad ratio); the message names the folder and the fix."""


def find_videos(root, extensions=VIDEO_EXTENSIONS):
    """Videos of each class folder of ``root``.

    Args:
        root (str): Folder of class sub-folders.
        extensions (Sequence[str]): File extensions taken as videos (any
            letter case, with the dot).

    Returns:
        dict[str, list[str]]: Class name -> paths relative to ``root``
        (``/``-separated, sorted), for every class folder in sorted order,
        empty ones included.

    Raises:
        FolderError: ``root`` is not a folder or has no sub-folders.
    """
    if not osp.isdir(root):
        raise FolderError(f'{root!r} is not a folder; give the folder whose '
                          'sub-folders are the classes')
    extensions = tuple(e.lower() for e in extensions)
    classes = sorted(
        entry.name for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith('.'))
    if not classes:
        raise FolderError(
            f'{root!r} has no sub-folders; put the videos of each class in '
            f'a folder of its own, e.g. {osp.join(root, "class_a", "1.mp4")}')
    videos = {}
    for name in classes:
        found = []
        for folder, dirs, files in os.walk(
                osp.join(root, name), followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
            for file in files:
                if (not file.startswith('.')
                        and file.lower().endswith(extensions)):
                    rel = osp.relpath(osp.join(folder, file), root)
                    found.append(rel.replace(os.sep, '/'))
        videos[name] = sorted(found)
    return videos


def split_class(name, videos, seed, val_ratio, test_ratio=0.0):
    """Split one class's videos into train/val/test.

    ``round(n * ratio)`` videos go to val and to test, at least one each
    when the ratio is above 0, and at least one stays in train; the
    shuffle is seeded with ``seed`` and the class name.

    Args:
        name (str): Class name (part of the shuffle's seed).
        videos (list[str]): The class's videos, sorted.
        seed (int): Seed of the split.
        val_ratio (float): Fraction for validation.
        test_ratio (float): Fraction for testing.

    Returns:
        dict[str, list[str]]: ``train``, ``val`` and ``test`` videos.

    Raises:
        FolderError: The class has too few videos for the ratios.
    """
    order = list(videos)
    random.Random(f'{seed}/{name}').shuffle(order)
    n = len(order)
    counts = {}
    for split, ratio in (('val', val_ratio), ('test', test_ratio)):
        counts[split] = max(1, round(n * ratio)) if ratio > 0 else 0
    if n - counts['val'] - counts['test'] < 1:
        need = 1 + (val_ratio > 0) + (test_ratio > 0)
        raise FolderError(
            f'class {name!r} has {n} video(s); the split needs at least '
            f'{need} (one for training and one for each held-out split); '
            'add videos or lower --val-ratio / --test-ratio')
    val_end = counts['val']
    test_end = val_end + counts['test']
    return dict(
        val=sorted(order[:val_end]),
        test=sorted(order[val_end:test_end]),
        train=sorted(order[test_end:]))


def build_lists(root,
                out_dir=None,
                val_ratio=0.2,
                test_ratio=0.0,
                seed=0,
                extensions=VIDEO_EXTENSIONS,
                skip_empty=False):
    """Write ``{train,val[,test]}_list_videos.txt`` and ``label_map.txt``.

    Args:
        root (str): Folder of class sub-folders.
        out_dir (str, optional): Where the files go. Defaults to ``root``.
        val_ratio (float): Fraction of each class for validation.
        test_ratio (float): Fraction of each class for testing; 0 writes no
            test list.
        seed (int): Seed of the split.
        extensions (Sequence[str]): Extensions taken as videos.
        skip_empty (bool): Leave out class folders without videos instead
            of stopping.

    Returns:
        dict: ``classes`` (names in label order), ``counts`` (split ->
        number of videos), ``files`` (split or ``'label_map'`` -> path) and
        ``skipped`` (empty class folders left out).

    Raises:
        FolderError: No classes, an empty class (without ``skip_empty``),
            fewer than two classes, or ratios outside [0, 1).
    """
    for flag, ratio in (('--val-ratio', val_ratio),
                        ('--test-ratio', test_ratio)):
        if not 0 <= ratio < 1:
            raise FolderError(f'{flag} must be in [0, 1), got {ratio}')
    if val_ratio + test_ratio >= 1:
        raise FolderError(f'--val-ratio + --test-ratio must be below 1, got '
                          f'{val_ratio} + {test_ratio}')
    videos = find_videos(root, extensions)
    empty = [name for name, files in videos.items() if not files]
    if len(empty) == len(videos):
        raise FolderError(
            f'no videos in the class folders of {root!r} (extensions '
            f'{", ".join(extensions)}); put videos in them or pass --ext')
    if empty and not skip_empty:
        shown = ', '.join(repr(n) for n in empty[:10])
        more = f' and {len(empty) - 10} more' if len(empty) > 10 else ''
        raise FolderError(
            f'{len(empty)} class folder(s) of {root!r} have no videos: '
            f'{shown}{more}; put videos in them, remove them, or pass '
            '--skip-empty to leave them out')
    classes = [name for name in videos if videos[name]]
    if len(classes) < 2:
        raise FolderError(
            f'{root!r} has videos for {len(classes)} class only '
            f'({classes[0]!r}); a classifier needs at least two class '
            'folders')
    for name in classes:
        if '\n' in name or '\r' in name:
            raise FolderError(f'class folder {name!r} has a line break in '
                              'its name; rename it')
    lists = {split: [] for split in SPLITS}
    for label, name in enumerate(classes):
        parts = split_class(name, videos[name], seed, val_ratio, test_ratio)
        for split in SPLITS:
            lists[split] += [(rel, label) for rel in parts[split]]
    out_dir = Path(out_dir if out_dir is not None else root)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {'label_map': str(out_dir / 'label_map.txt')}
    Path(files['label_map']).write_text(''.join(f'{n}\n' for n in classes),
                                        encoding='utf-8')
    for split in SPLITS:
        if split == 'test' and test_ratio == 0:
            continue
        if split == 'val' and val_ratio == 0:
            continue
        files[split] = str(out_dir / f'{split}_list_videos.txt')
        Path(files[split]).write_text(
            ''.join(f'{rel} {label}\n' for rel, label in lists[split]),
            encoding='utf-8')
    return dict(
        classes=classes,
        counts={split: len(lists[split])
                for split in SPLITS if split in files},
        files=files,
        skipped=empty if skip_empty else [])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('root', help='folder of class sub-folders of videos')
    parser.add_argument(
        '--out-dir', help='where the lists and label map go (default: ROOT)')
    parser.add_argument(
        '--val-ratio',
        type=float,
        default=0.2,
        help='fraction of each class for validation (default 0.2)')
    parser.add_argument(
        '--test-ratio',
        type=float,
        default=0.0,
        help='fraction of each class for a test list (default 0: none)')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the split (default 0)')
    parser.add_argument(
        '--ext',
        nargs='+',
        default=list(VIDEO_EXTENSIONS),
        help='extensions taken as videos (default: %(default)s)')
    parser.add_argument(
        '--skip-empty',
        action='store_true',
        help='leave out class folders without videos instead of stopping')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    extensions = [e if e.startswith('.') else f'.{e}' for e in args.ext]
    try:
        result = build_lists(args.root, args.out_dir, args.val_ratio,
                             args.test_ratio, args.seed, extensions,
                             args.skip_empty)
    except FolderError as err:
        sys.exit(f'error: {err}')
    print(f'{args.root}: {len(result["classes"])} classes')
    for name in result['skipped']:
        print(f'  left out (no videos): {name}')
    for split, count in result['counts'].items():
        print(f'  {split}: {count} videos -> {result["files"][split]}')
    print(f'  label map -> {result["files"]["label_map"]}')


if __name__ == '__main__':
    main()
