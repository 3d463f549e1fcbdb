"""Top-1 of a clip-trained model in clip mode and in continual mode, per
video of a config's test set.

* clip mode: the config's test views (clips x crops), averaged as
  ``tools/test.py`` averages them (:func:`x3d_plugin.apis.predict_video`);
* continual mode: continual X3D (:class:`x3d_plugin.models.ContinualX3D`,
  the same weights) steps through every ``frame_interval``-th frame of the
  video with the test pipeline's crops, and the prediction after the last
  frame is the video's (:func:`x3d_plugin.apis.predict_continual`).

Example (the demo model that ``bash tools/quickstart.sh`` trains)::

    python tools/benchmark/continual_accuracy.py configs/x3d_xs_demo.py \\
        work_dirs/x3d_xs_demo/best_acc_top1_epoch_*.pth \\
        --out work_dirs/x3d_xs_demo/continual_accuracy.json
"""
import argparse
import json
import os.path as osp
import sys
import time

import numpy as np
from mmengine.config import Config

from x3d_plugin.apis import (InferenceError, init_recognizer,
                             predict_continual, predict_video)
from x3d_plugin.models import continual_from_recognizer
from x3d_plugin.utils.benchmark import describe_machine


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', help='weights')
    parser.add_argument('--ann-file', help='test list (default: the '
                        'config\'s test_dataloader.dataset.ann_file)')
    parser.add_argument('--video-root', help='folder the list\'s paths are '
                        'relative to (default: the config\'s data_prefix)')
    parser.add_argument('--window', type=int, help='frames the continual SE '
                        'blocks and head average over (default: the '
                        'config\'s clip_len)')
    parser.add_argument('--max-videos', type=int,
                        help='only the first N videos of the list')
    parser.add_argument('--out', help='write per-video results as JSON here')
    return parser.parse_args(argv)


def read_list(ann_file: str, video_root: str):
    """(path, label) of each line ``relative/path.mp4 LABEL``."""
    if not osp.isfile(ann_file):
        raise InferenceError(f'test list {ann_file!r} does not exist; pass '
                             '--ann-file or generate the data first')
    items = []
    with open(ann_file) as f:
        for line in f:
            if line.strip():
                path, label = line.split()[:2]
                items.append((osp.join(video_root, path), int(label)))
    return items


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    dataset = cfg.test_dataloader.dataset
    ann_file = args.ann_file or dataset.ann_file
    video_root = args.video_root or dataset.get('data_prefix', {}).get(
        'video', '')
    try:
        items = read_list(ann_file, video_root)[:args.max_videos]
        model = init_recognizer(cfg, args.checkpoint)
        net = continual_from_recognizer(model, args.window, args.window)
    except (InferenceError, ValueError) as err:
        sys.exit(f'error: {err}')
    print(describe_machine())
    print(f'{len(items)} videos of {ann_file}; continual windows '
          f'{net.se_window} (SE) / {net.pool_window} (head), outputs free of '
          f'the initial state from frame {net.warmup_frames}')
    rows = []
    start = time.time()
    for i, (video, label) in enumerate(items, 1):
        clip = predict_video(model, video, topk=1)['scores']
        cont = predict_continual(model, video, net, topk=1)
        rows.append(dict(video=video, label=label,
                         clip_top1=int(np.argmax(clip)),
                         continual_top1=int(np.argmax(cont['scores'][-1])),
                         continual_frames=len(cont['frames'])))
        print(f'\r{i}/{len(items)} videos, {time.time() - start:.0f} s',
              end='', flush=True)
    print()
    labels = np.array([r['label'] for r in rows])
    clip_acc = 100 * float(np.mean(
        [r['clip_top1'] for r in rows] == labels)) if rows else 0.0
    cont_acc = 100 * float(np.mean(
        [r['continual_top1'] for r in rows] == labels)) if rows else 0.0
    frames = int(np.median([r['continual_frames'] for r in rows])) if rows \
        else 0
    print('| mode | views | top-1 (%) |')
    print('| --- | --- | --- |')
    print(f'| clip | the config\'s test views | {clip_acc:.2f} |')
    print(f'| continual | last of {frames} frames (median), the config\'s '
          f'crops | {cont_acc:.2f} |')
    result = dict(config=args.config, checkpoint=args.checkpoint,
                  videos=len(rows), clip_top1=clip_acc,
                  continual_top1=cont_acc, se_window=net.se_window,
                  pool_window=net.pool_window,
                  warmup_frames=net.warmup_frames, per_video=rows)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'written: {args.out}')
    return result


if __name__ == '__main__':
    main()
