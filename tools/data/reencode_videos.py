"""Re-encode a folder of videos for fast random access in training.

Each video is written as H.264 MP4 under OUT_DIR at the same relative path
(extension ``.mp4``), with its short side scaled down to ``--short-side``
and a keyframe every ``--keyint`` frames; frame rate and timestamps are
kept, audio is dropped. Work is spread over ``--workers`` processes.

The run is resumable: a video whose output exists is skipped, and outputs
appear only when complete, so an interrupted run is continued by running
the same command again. Videos that cannot be read are listed in
``OUT_DIR/reencode_failures.tsv`` (and the exit status is 1); the other
videos are still done.

With ``--ann-files``, only the videos named in those MMAction2 lists
(``path label``, paths relative to SRC_DIR) are re-encoded, and each list
is written again into OUT_DIR with the new names and without the videos
that failed, ready for ``data_prefix=dict(video=OUT_DIR)``.

Example (Kinetics-400 at short side 320, as MMAction2's resize scripts
do)::

    python tools/data/reencode_videos.py data/kinetics400/videos_train \\
        data/kinetics400/videos_train_320 --short-side 320 --keyint 16 \\
        --ann-files data/kinetics400/kinetics400_train_list_videos.txt
"""
import argparse
import os
import os.path as osp
import sys
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from x3d_plugin.datasets.reencode import (  # noqa: E402
    VIDEO_EXTENSIONS, reencode_job, reencoded_name)
from x3d_plugin.datasets.video_io import require  # noqa: E402

FAILURES = 'reencode_failures.tsv'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('src_dir', help='folder of the original videos')
    parser.add_argument('out_dir', help='folder for the re-encoded videos')
    parser.add_argument('--ann-files', nargs='+', default=[],
                        help='MMAction2 lists whose videos to re-encode; '
                        'rewritten into OUT_DIR')
    parser.add_argument('--short-side', type=int, default=320,
                        help='target short side (never enlarged; 0 keeps '
                        'the size). Default: 320')
    parser.add_argument('--keyint', type=int, default=16,
                        help='frames between keyframes. Default: 16')
    parser.add_argument('--crf', type=int, default=23,
                        help='x264 quality (lower is better). Default: 23')
    parser.add_argument('--preset', default='veryfast',
                        help='x264 preset. Default: veryfast')
    parser.add_argument('--workers', type=int, default=os.cpu_count(),
                        help='parallel processes. Default: all cores')
    parser.add_argument('--overwrite', action='store_true',
                        help='re-encode videos whose output exists')
    args = parser.parse_args(argv)
    if not osp.isdir(args.src_dir):
        parser.error(f'source folder {args.src_dir!r} does not exist')
    if args.keyint < 1 or args.short_side < 0 or args.workers < 1:
        parser.error('--keyint and --workers must be >= 1, --short-side '
                     '>= 0')
    for ann in args.ann_files:
        if not osp.isfile(ann):
            parser.error(f'annotation list {ann!r} does not exist')
    return args


def read_list(path):
    """(relative video path, rest of the line) for every line of a list."""
    entries = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise SystemExit(f'{path}:{number}: expected "path label", '
                                 f'got {line!r}')
            entries.append(tuple(parts))
    return entries


def find_videos(src_dir):
    found = []
    for folder, _, names in os.walk(src_dir):
        for name in names:
            if name.lower().endswith(VIDEO_EXTENSIONS):
                found.append(
                    osp.relpath(osp.join(folder, name), src_dir))
    return sorted(found)


def main(argv=None):
    args = parse_args(argv)
    require('av')  # before any work: without it every video would fail
    lists = {ann: read_list(ann) for ann in args.ann_files}
    if lists:
        videos = sorted({rel for entries in lists.values()
                         for rel, _ in entries})
    else:
        videos = find_videos(args.src_dir)
    if not videos:
        raise SystemExit(f'no videos found in {args.src_dir!r}')
    options = dict(short_side=args.short_side, keyint=args.keyint,
                   crf=args.crf, preset=args.preset)
    jobs, done = [], 0
    for rel in videos:
        dst = osp.join(args.out_dir, reencoded_name(rel))
        if osp.exists(dst) and not args.overwrite:
            done += 1
            continue
        jobs.append((osp.join(args.src_dir, rel), dst, options))
    os.makedirs(args.out_dir, exist_ok=True)
    print(f'{len(videos)} videos: {done} already re-encoded, '
          f'{len(jobs)} to do with {args.workers} processes')
    failed = {}
    start = time.time()
    with Pool(min(args.workers, max(len(jobs), 1))) as pool:
        for count, result in enumerate(
                pool.imap_unordered(reencode_job, jobs), 1):
            rel = osp.relpath(result['src'], args.src_dir)
            if not result['ok']:
                failed[rel] = result['error']
                print(f'FAILED {rel}: {result["error"]}', flush=True)
            if count % 50 == 0 or count == len(jobs):
                rate = count / max(time.time() - start, 1e-9)
                print(f'[{count}/{len(jobs)}] {rate:.1f} videos/s',
                      flush=True)
    report = osp.join(args.out_dir, FAILURES)
    if failed:
        with open(report, 'w') as f:
            f.write(''.join(f'{rel}\t{err}\n'
                            for rel, err in sorted(failed.items())))
    elif osp.exists(report):
        os.remove(report)  # the failures it lists are now done
    for ann, entries in lists.items():
        out = osp.join(args.out_dir, osp.basename(ann))
        kept = [f'{reencoded_name(rel)} {rest}\n' for rel, rest in entries
                if rel not in failed]
        with open(out, 'w') as f:
            f.writelines(kept)
        print(f'wrote {out} ({len(kept)} of {len(entries)} lines)')
    if failed:
        print(f'{len(failed)} videos failed; listed in {report}. They are '
              'left out of the rewritten lists; run again to retry them.')
        return 1
    print(f'all {len(videos)} videos are in {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
