"""Write per-snippet X3D features of videos as the CSV files that MMAction2's
temporal action localizers (BMN, BSN) read.

One snippet (a clip of the config's test sampler: ``num_frames`` frames at
``sampling_rate``) is centred every ``--stride`` frames of the file; each
video gives ``OUT_DIR/<name>.csv`` with a header line and one line per
snippet (or ``--temporal-scale`` lines), where ``<name>`` is the video's
path in the list without its extension, as ``ActivityNetDataset`` looks
for ``<data_prefix>/<video_name>.csv``. Existing files are kept (the run
can be repeated after an interruption) unless ``--overwrite``. A missing
or unreadable video is reported and skipped; the exit status is then 1.

Examples::

    python tools/extract_features.py configs/x3d_m_k400.py x3d_m.pth \\
        feats/ --video a.mp4 b.mkv
    python tools/extract_features.py configs/x3d_m_k400.py x3d_m.pth \\
        data/ActivityNet/x3d_m/ --video-list videos.txt \\
        --video-root data/ActivityNet/videos --stride 16 \\
        --temporal-scale 100 --feature pre_logits
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config, DictAction

from x3d_plugin.apis import InferenceError, init_recognizer
from x3d_plugin.apis.features import (FEATURES, extract_features,
                                      feature_frame, resample_features,
                                      write_feature_csv)
from x3d_plugin.datasets.annotations import (AnnotationError,
                                             parse_annotation_line,
                                             read_lines)
from x3d_plugin.datasets.transforms import VideoDecodeError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config (its test_pipeline '
                        'gives the clip sampling, decoding and crops)')
    parser.add_argument('checkpoint', help='weights')
    parser.add_argument('out_dir', help='folder for the CSV files')
    videos = parser.add_mutually_exclusive_group(required=True)
    videos.add_argument('--video', nargs='+', help='video files')
    videos.add_argument('--video-list', help='a list of videos, one a line '
                        '(a path and optionally a label, as MMAction2\'s '
                        'VideoDataset lists)')
    parser.add_argument('--video-root', default='',
                        help='folder the --video-list paths are relative to')
    parser.add_argument('--stride', type=int, default=16,
                        help='frames of the file between snippet centres '
                        '(default 16, ActivityNet\'s snippets)')
    parser.add_argument('--feature', choices=FEATURES, default='backbone',
                        help='backbone: last stage average-pooled; '
                        'head_conv: X3DHead 1x1x1 conv pooled; pre_logits: '
                        'X3DHead linear layer (the classifier\'s input)')
    parser.add_argument('--temporal-scale', type=int,
                        help='resample each video to this many rows (BMN '
                        'and BSN configs read temporal_dim=100)')
    parser.add_argument('--batch-size', type=int, default=8,
                        help='snippets per forward pass')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing CSV files')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def read_video_list(path):
    """The video paths of a list: one a line, optionally followed by an
    integer label (MMAction2's ``VideoDataset`` lists)."""
    paths = []
    for _, text in read_lines(path):
        try:
            name, label = parse_annotation_line(text)
            int(label)
        except ValueError:
            name = text
        paths.append(name)
    return paths


def video_jobs(args):
    """``(video path, output name)`` pairs; an ``InferenceError`` if two
    videos would write the same file."""
    if args.video:
        jobs = [(v, osp.splitext(osp.basename(v))[0]) for v in args.video]
    else:
        jobs = [(osp.join(args.video_root, path), osp.splitext(path)[0])
                for path in read_video_list(args.video_list)]
    seen = {}
    for video, name in jobs:
        if name in seen:
            raise InferenceError(
                f'{seen[name]!r} and {video!r} would both be written to '
                f'{name}.csv; rename one of them')
        seen[name] = video
    return jobs


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.stride <= 0:
        sys.exit(f'--stride must be a positive number of frames, got '
                 f'{args.stride}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        jobs = video_jobs(args)
        model = init_recognizer(cfg, args.checkpoint, args.device)
    except (InferenceError, AnnotationError) as err:
        sys.exit(f'error: {err}')
    failed = kept = written = 0
    for video, name in jobs:
        out = osp.join(args.out_dir, name + '.csv')
        if osp.exists(out) and not args.overwrite:
            kept += 1
            print(f'{out}: exists, kept (--overwrite replaces it)')
            continue
        try:
            result = extract_features(model, video, args.stride,
                                      args.feature, args.batch_size)
            feats = result['features']
            if args.temporal_scale and len(feats):
                feats = resample_features(feats, args.temporal_scale)
            write_feature_csv(out, feats)
        except (InferenceError, VideoDecodeError, ValueError) as err:
            failed += 1
            print(f'error: {err}', file=sys.stderr)
            continue
        written += 1
        rows = len(result['features'])
        covered = feature_frame(rows, args.stride, result['total_frames'])
        print(f'{out}: {len(feats)} x {feats.shape[1]} ({rows} snippets); '
              f"total_frames {result['total_frames']}, fps "
              f"{result['fps']:g}, feature_frame {covered}")
    print(f'{written} written, {kept} kept, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
