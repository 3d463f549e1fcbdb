"""Build MMAction2 annotation lists for Kinetics-400 from the official CSV
files and a folder of downloaded clips.

The official CSVs (``kinetics400/{train,validate,test}.csv``) have the
columns ``label,youtube_id,time_start,time_end,split``; downloaded clips are
commonly named ``{youtube_id}_{time_start:06d}_{time_end:06d}.mp4``. Class
indices follow the standard alphabetical order of the 400 names, which is
the order of ``configs/label_map_k400.txt`` and of the official checkpoints.

Example::

    python tools/data/kinetics/build_file_list.py \\
        kinetics400/train.csv data/kinetics400/videos_train \\
        data/kinetics400/kinetics400_train_list_videos.txt --check-readable

Clips that are listed but not downloaded, or that do not open, are reported
(and written to ``OUT.missing.txt`` / ``OUT.unreadable.txt``), and left out
of the list.
"""
import argparse
import csv
import os.path as osp
import sys
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from x3d_plugin.datasets.transforms import SparseVideoReader  # noqa: E402
from x3d_plugin.datasets.video_io import (  # noqa: E402
    error_reason, raise_if_environment_error, require)

DEFAULT_LABEL_MAP = ROOT / 'configs' / 'label_map_k400.txt'
EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi')


def read_csv(path):
    """Rows of an official Kinetics CSV as dicts; checks the header."""
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        need = {'label', 'youtube_id', 'time_start', 'time_end'}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise SystemExit(f'{path}: expected the columns '
                             f'label,youtube_id,time_start,time_end,split; '
                             f'got {reader.fieldnames}')
        return list(reader)


def clip_stem(row):
    return (f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_"
            f"{int(float(row['time_end'])):06d}")


def find_clip(folder, stem, label):
    """The clip's file, flat in ``folder`` or in a per-class subfolder."""
    for sub in ('', label, label.replace(' ', '_')):
        for ext in EXTENSIONS:
            path = osp.join(folder, sub, stem + ext)
            if osp.isfile(path):
                return osp.relpath(path, folder)
    return None


def readable(path):
    """None if the configs' video reader (PyAV) opens the clip and decodes
    its middle frame, else the reason why not. A missing package is
    raised: it is not a fault of the clip."""
    try:
        with SparseVideoReader(path) as reader:
            reader.get_batch([len(reader) // 2])
        return None
    except Exception as err:  # any decoder error makes the clip unusable
        raise_if_environment_error(err)
        return error_reason(err)


def _check(args):
    folder, rel = args
    return rel, readable(osp.join(folder, rel))


def build(csv_path, video_dir, out, label_map=DEFAULT_LABEL_MAP,
          check_readable=False, workers=4):
    """Write the list ``out``; return (listed, missing, unreadable)."""
    classes = Path(label_map).read_text().splitlines()
    index = {name: i for i, name in enumerate(classes)}
    rows = read_csv(csv_path)
    unknown = sorted({r['label'] for r in rows} - set(index))
    if unknown:
        raise SystemExit(f'{csv_path}: labels not in {label_map}: '
                         f'{unknown[:5]}')
    entries, missing = [], []
    for row in rows:
        rel = find_clip(video_dir, clip_stem(row), row['label'])
        if rel is None:
            missing.append(clip_stem(row))
        else:
            entries.append((rel, index[row['label']]))
    unreadable = []
    if check_readable and entries:
        with Pool(workers) as pool:
            bad = dict(
                (rel, why) for rel, why in pool.imap_unordered(
                    _check, [(video_dir, rel) for rel, _ in entries],
                    chunksize=16) if why)
        unreadable = sorted(bad.items())
        entries = [e for e in entries if e[0] not in bad]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(''.join(f'{rel} {label}\n' for rel, label in entries))
    if missing:
        Path(f'{out}.missing.txt').write_text('\n'.join(missing) + '\n')
    if unreadable:
        Path(f'{out}.unreadable.txt').write_text(''.join(
            f'{rel}\t{why}\n' for rel, why in unreadable))
    return len(entries), missing, unreadable


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('csv', help='official Kinetics CSV (train/validate)')
    parser.add_argument('video_dir', help='folder of downloaded clips')
    parser.add_argument('out', help='annotation list to write')
    parser.add_argument('--label-map', default=str(DEFAULT_LABEL_MAP),
                        help='class names in index order')
    parser.add_argument('--check-readable', action='store_true',
                        help='decode a frame of every clip with the configs\' '
                        'reader (PyAV) and leave out the clips that fail')
    parser.add_argument('--workers', type=int, default=4)
    args = parser.parse_args(argv)
    if not osp.isdir(args.video_dir):
        sys.exit(f'error: video folder {args.video_dir!r} does not exist')
    if args.check_readable:
        require('av')
    listed, missing, unreadable = build(args.csv, args.video_dir, args.out,
                                        args.label_map, args.check_readable,
                                        args.workers)
    print(f'{args.out}: {listed} clips listed')
    if missing:
        print(f'  {len(missing)} clips of the CSV not found in '
              f'{args.video_dir} (list: {args.out}.missing.txt)')
    if unreadable:
        print(f'  {len(unreadable)} clips unreadable, left out (list: '
              f'{args.out}.unreadable.txt)')


if __name__ == '__main__':
    main()
