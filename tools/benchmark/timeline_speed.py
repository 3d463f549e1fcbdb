"""Time and peak memory of ``tools/infer.py --timeline`` on long videos.

Generates 320p H.264 videos of the given lengths (a sliding texture, libx264
``ultrafast``, a keyframe every 2 s; about a second of encoding per minute
of video) and runs the timeline of ``configs/x3d_xs_demo.py`` (X3D-XS,
random weights; windows of 16 frames of the file, 8 of them sampled,
decoded at short side 48, 3 crops) on each in a fresh process, whose wall
time and peak resident memory (``ru_maxrss`` from ``wait4``) go into the
table, with the 1-minute load average before the run (above the number of
cores, other processes competed for them). Time per minute of video stays
flat when the timeline is linear in the video's length; peak memory stays
flat when the reader holds a bounded part of the file.

Example (the table in docs/benchmarks.md)::

    python tools/benchmark/timeline_speed.py --minutes 1 10 60 \\
        --out-dir work_dirs/timeline_speed
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / 'configs' / 'x3d_xs_demo.py'


def write_long_video(path: str, seconds: float, fps: int = 30,
                     width: int = 568, height: int = 320,
                     gop: int = 60) -> None:
    """A ``width`` x ``height`` H.264 video of ``seconds``: a luma texture
    that slides 3 pixels a frame over grey chroma, so every frame differs
    and the encoder has motion to code. Frames are made in YUV directly;
    encoding dominates."""
    import av
    pad = 4096
    x = np.arange(width + pad)
    y = np.arange(height)[:, None]
    luma = (128 + 60 * np.sin(x / 13.0) +
            50 * np.sin(y / 7.0 + x / 29.0)).astype(np.uint8)
    chroma = np.full((height // 2, width), 128, np.uint8)
    with av.open(path, 'w') as container:
        stream = container.add_stream('libx264', rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = 'yuv420p'
        stream.options = {'preset': 'ultrafast', 'crf': '28', 'g': str(gop),
                          'threads': '1'}
        for i in range(int(seconds * fps)):
            offset = (i * 3) % pad
            yuv = np.concatenate([luma[:, offset:offset + width], chroma])
            frame = av.VideoFrame.from_ndarray(yuv, format='yuv420p')
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def random_checkpoint(path: str) -> None:
    """The demo config's model with its random initial weights."""
    import torch

    from x3d_plugin.apis import init_recognizer
    torch.manual_seed(0)
    model = init_recognizer(str(CONFIG))
    torch.save(dict(state_dict=model.state_dict()), path)


class _NoModel:
    """Stands in for the recognizer in ``--data-only`` runs: the windows'
    pipeline (open, sample, decode, crop, format) runs as in the real
    timeline, the network does not."""

    def __init__(self, cfg):
        self.cfg = cfg

    def test_step(self, batch):
        import torch
        sample = batch['data_samples'][0]
        sample.pred_score = torch.full((8, ), 1 / 8)
        return [sample]


def data_only_timeline(video: str, out: str) -> None:
    """The timeline of ``video`` without the network, written to ``out``."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from x3d_plugin.apis import predict_timeline
    cfg = Config.fromfile(str(CONFIG))
    init_default_scope(cfg.default_scope)
    windows = predict_timeline(_NoModel(cfg), video, progress=False)
    with open(out, 'w') as f:
        json.dump(dict(video=video, windows=windows), f)


def run_timeline(video: str, checkpoint: str, out: str, data_only: bool):
    """Wall seconds and peak RSS (MiB) of ``tools/infer.py --timeline`` (or
    with ``data_only`` the same timeline without the network) in a process
    of its own."""
    if data_only:
        command = [sys.executable, __file__, '--child', video, out]
    else:
        command = [
            sys.executable, str(ROOT / 'tools' / 'infer.py'), video,
            '--config', str(CONFIG), '--checkpoint', checkpoint,
            '--timeline', '--out', out
        ]
    env = dict(os.environ)
    env.setdefault('PYTHONPATH', str(ROOT))
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors='replace')
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f'{" ".join(command)} failed:\n{stderr[-3000:]}')
    return seconds, usage.ru_maxrss / 1024  # kB on Linux


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, nargs='+',
                        default=[1, 10, 60])
    parser.add_argument('--fps', type=int, default=30)
    parser.add_argument('--out-dir', default='work_dirs/timeline_speed',
                        help='videos (kept for reruns), checkpoint, JSON')
    parser.add_argument('--data-only', action='store_true',
                        help='the windows\' pipeline without the network '
                        '(reader and transforms only)')
    parser.add_argument('--child', nargs=2, metavar=('VIDEO', 'OUT'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        data_only_timeline(*args.child)
        return

    from x3d_plugin.utils.benchmark import describe_machine
    os.makedirs(args.out_dir, exist_ok=True)
    checkpoint = osp.join(args.out_dir, 'x3d_xs_demo_random.pth')
    if not args.data_only and not osp.exists(checkpoint):
        random_checkpoint(checkpoint)
    print(describe_machine())
    print(f'{sys.executable} {" ".join(sys.argv)}\n')
    if args.data_only:
        print('Data path only (no network).\n')
    print('| video | file size | windows | time, s | s per video minute '
          '| peak RSS, MiB | load before |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for minutes in args.minutes:
        video = osp.join(args.out_dir,
                         f'sliding_320p_{args.fps}fps_{minutes:g}min.mp4')
        if not osp.exists(video):
            start = time.perf_counter()
            write_long_video(video + '.tmp.mp4', minutes * 60, args.fps)
            os.replace(video + '.tmp.mp4', video)
            print(f'(generated {video} in '
                  f'{time.perf_counter() - start:.0f} s)', file=sys.stderr)
        out = osp.splitext(video)[0] + '.json'
        load = os.getloadavg()[0]
        seconds, rss = run_timeline(video, checkpoint, out, args.data_only)
        with open(out) as f:
            windows = len(json.load(f)['windows'])
        size = osp.getsize(video) / 2**20
        print(f'| {minutes:g} min, 568x320, {args.fps} fps | {size:.0f} MiB '
              f'| {windows} | {seconds:.0f} | {seconds / minutes:.1f} '
              f'| {rss:.0f} | {load:.1f} |', flush=True)


if __name__ == '__main__':
    main()
