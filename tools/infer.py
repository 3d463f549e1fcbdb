"""Recognise the action in a video (any format FFmpeg reads).

Runs the config's test views (clips x crops) with the same averaging as
testing and prints the top-k classes; ``--timeline`` slides a one-clip window
over the video and writes per-window predictions (JSON) and a plot (PNG);
``--continual`` predicts after every sampled frame with continual X3D
(each frame computed once).

Examples::

    python tools/infer.py video.mp4 --config configs/x3d_m_k400.py \\
        --checkpoint x3d_m_k400.pth --label-map configs/label_map_k400.txt
    python tools/infer.py long.mp4 --config C --checkpoint W --timeline \\
        --out long.json
    python tools/infer.py video.mp4 --config C --checkpoint x3d_m.xml \\
        --engine openvino      # a model from tools/deployment/export.py
    python tools/infer.py long.mp4 --config C --checkpoint W --continual \\
        --out frames.json
"""
import argparse
import json
import os.path as osp
import sys

from x3d_plugin.apis import (InferenceError, init_recognizer,
                             plot_timeline, predict_timeline, predict_video,
                             read_label_map)
from x3d_plugin.apis.engines import add_engine_arguments
from x3d_plugin.utils.malloc import keep_freed_memory


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('video', help='the video file')
    parser.add_argument('--config', required=True, help='model config')
    parser.add_argument('--checkpoint', required=True,
                        help='weights; with --engine also a model file '
                        'from tools/deployment/export.py')
    parser.add_argument('--label-map', help='class names, one a line')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--topk', type=int, default=5)
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fold BN into the convolutions (same scores, '
                        'faster)')
    add_engine_arguments(parser)
    parser.add_argument('--out', help='write the result as JSON here')
    parser.add_argument('--timeline', action='store_true',
                        help='per-window predictions over the video')
    parser.add_argument('--stride', type=float,
                        help='seconds between timeline windows (default: '
                        'one window length)')
    parser.add_argument('--plot', help='timeline PNG (default: next to '
                        '--out, or VIDEO_NAME_timeline.png)')
    parser.add_argument('--continual', action='store_true',
                        help='per-frame top-k with continual X3D (frames '
                        'every frame_interval of the config)')
    parser.add_argument('--window', type=int,
                        help='frames the continual SE blocks and head '
                        'average over (default: the config\'s clip_len)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # Large tensors are freed and allocated again every step: keep the
    # memory in the process (x3d_plugin/utils/malloc.py).
    keep_freed_memory()
    try:
        if args.engine and args.continual:
            raise InferenceError('--continual steps the PyTorch model frame '
                                 'by frame; leave out --engine')
        model = init_recognizer(args.config, args.checkpoint, args.device,
                                fuse_conv_bn=args.fuse_conv_bn,
                                engine=args.engine,
                                precision=args.precision)
        names = (read_label_map(args.label_map, model.cls_head.num_classes)
                 if args.label_map else None)
        if args.continual:
            result = _continual(model, args, names)
        elif args.timeline:
            windows = predict_timeline(model, args.video, args.stride, names)
            plot = args.plot or osp.splitext(
                args.out or osp.basename(args.video))[0] + '_timeline.png'
            plot_timeline(windows, plot, title=osp.basename(args.video))
            for w in windows:
                print(f"{w['start']:7.2f}-{w['end']:7.2f} s  "
                      f"{w['label']:<30} {w['score']:.3f}")
            print(f'timeline plot: {plot}')
            result = dict(video=args.video, windows=[
                {k: v for k, v in w.items() if k != 'scores'}
                for w in windows])
        else:
            pred = predict_video(model, args.video, args.topk, names)
            for rank, item in enumerate(pred['topk'], 1):
                print(f"{rank}. {item['label']:<30} {item['score']:.4f}")
            result = dict(video=args.video, topk=pred['topk'])
    except InferenceError as err:
        sys.exit(f'error: {err}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'written: {args.out}')
    return result


def _continual(model, args, names):
    from x3d_plugin.apis import predict_continual
    from x3d_plugin.models import continual_from_recognizer
    net = continual_from_recognizer(model, args.window, args.window)
    pred = predict_continual(model, args.video, net, args.topk, names)
    for f in pred['frames']:
        top = '  '.join(f"{t['label']} {t['score']:.3f}" for t in f['topk'])
        print(f"{f['time']:7.2f} s  frame {f['frame']:<6d} {top}")
    print(f"outputs from sampled frame {pred['warmup_frames']} on no longer "
          'depend on the initial state')
    return dict(video=args.video, warmup_frames=pred['warmup_frames'],
                frames=pred['frames'])


if __name__ == '__main__':
    main()
