"""Classify a live video source as it arrives, in real time.

SOURCE is a file, ``-`` (a pipe on stdin, e.g. ``ffmpeg ... -f mpegts -``),
a network URL that FFmpeg opens (udp://, http://, rtsp://, srt:// ...) or a
camera (/dev/videoN, through FFmpeg's v4l2 input). Every ``--every`` source
frames the newest complete window (the config's test clip) is classified;
when the model is slower than the source, older windows are skipped, never
queued. Predictions go out as JSON lines (stdout or ``--out``), flushed per
line; a progress line and the final report go to stderr. The exit status
is 0 when the stream ended, 2 when it stalled or broke (what was predicted
is kept).

Examples::

    python tools/stream.py configs/x3d_xs_k400.py x3d_xs.pth video.mp4 \\
        --realtime --label-map configs/label_map_k400.txt
    ffmpeg -re -i video.mp4 -c copy -f mpegts - | \\
        python tools/stream.py CONFIG CHECKPOINT - --out preds.jsonl
    python tools/stream.py CONFIG CHECKPOINT udp://127.0.0.1:5000 \\
        --reconnect 3 --annotate annotated.mp4
    python tools/stream.py CONFIG CHECKPOINT /dev/video0 \\
        --input-option video_size=640x480 --input-option framerate=30 \\
        --serve 8080
"""
import argparse
import os
import sys
import threading
import time
from fractions import Fraction

from x3d_plugin.apis import InferenceError, init_recognizer, read_label_map
from x3d_plugin.apis.engines import add_engine_arguments
from x3d_plugin.apis.stream import StreamClassifier, StreamError
from x3d_plugin.apis.stream_serve import LiveServer
from x3d_plugin.utils.malloc import keep_freed_memory


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', help='weights')
    parser.add_argument('source', help='file, - (stdin), URL or /dev/videoN')
    parser.add_argument('--every', type=int,
                        help='source frames between predictions (default: '
                        "one window's span)")
    parser.add_argument('--realtime', action='store_true',
                        help='play a file at its own frame rate')
    parser.add_argument('--topk', type=int, default=5)
    parser.add_argument('--label-map', help='class names, one a line '
                        "(default: the config's label_map, if it has one)")
    parser.add_argument('--out', help='write the JSON lines here (default: '
                        'stdout)')
    parser.add_argument('--scores', action='store_true',
                        help="add every class's score to each line")
    parser.add_argument('--annotate', metavar='OUT.mp4',
                        help='write the frames with the top-k drawn on them')
    parser.add_argument('--serve', type=int, metavar='PORT',
                        help='serve a page of the live frames, the top-5 '
                        "and a chart of the top classes' scores")
    parser.add_argument('--serve-host', default='127.0.0.1',
                        help='address the page listens on (default: this '
                        'machine only)')
    parser.add_argument('--stall-timeout', type=float, default=10.0,
                        help='seconds without a frame that end the stream')
    parser.add_argument('--reconnect', type=int, default=0,
                        help='times to reopen a network source')
    parser.add_argument('--input-format',
                        help="FFmpeg input format, e.g. v4l2, mpegts")
    parser.add_argument('--input-option', action='append', default=[],
                        metavar='KEY=VALUE',
                        help='FFmpeg input option (repeatable)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    add_engine_arguments(parser)
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fold BN into the convolutions (same scores, '
                        'faster)')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress line on stderr')
    return parser.parse_args(argv)


def _options(pairs):
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep or not key:
            raise StreamError(f'--input-option {pair!r} is not KEY=VALUE')
        options[key] = value
    return options


class AnnotatedWriter:
    """An MP4 (H.264 through PyAV) of the source's frames with the current
    top-k drawn on each (OpenCV).

    Args:
        path (str): The output file.
        topk (int): Classes drawn.
    """

    def __init__(self, path: str, topk: int) -> None:
        self.path = path
        self.topk = topk
        self.current = []
        self._lock = threading.Lock()
        self._container = None
        self._stream = None

    def update(self, prediction) -> None:
        with self._lock:
            self.current = prediction.topk[:self.topk]

    def write(self, frame, time_s: float) -> None:
        import av
        import cv2
        if self._container is None:
            self._container = av.open(self.path, mode='w')
            self._stream = self._container.add_stream('libx264', rate=1000)
            # Even sizes for yuv420p.
            self._stream.width = frame.width // 2 * 2
            self._stream.height = frame.height // 2 * 2
            self._stream.pix_fmt = 'yuv420p'
            self._stream.time_base = Fraction(1, 1000)
            self._last_pts = -1
        image = frame.to_ndarray(width=self._stream.width,
                                 height=self._stream.height, format='rgb24')
        with self._lock:
            lines = [f"{t['label']} {t['score']:.2f}" for t in self.current]
        scale = max(0.35, image.shape[0] / 480)
        for i, text in enumerate(lines):
            y = int((i + 1) * 22 * scale)
            cv2.putText(image, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6 * scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(image, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6 * scale, (255, 255, 255), 1, cv2.LINE_AA)
        out = av.VideoFrame.from_ndarray(image, format='rgb24')
        # The source's own timing, in ms; never two frames at one pts.
        out.pts = max(self._last_pts + 1, int(round(time_s * 1000)))
        self._last_pts = out.pts
        for packet in self._stream.encode(out):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()


class Progress:
    """A progress line on stderr, at most once a second (every 10 s when
    stderr is not a terminal)."""

    def __init__(self, classifier: StreamClassifier) -> None:
        self.classifier = classifier
        self.began = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.period = 1.0 if self.tty else 10.0
        self.shown = self.began

    def tick(self) -> None:
        now = time.monotonic()
        report = self.classifier.report
        if report is None or now - self.shown < self.period:
            return
        self.shown = now
        report.seconds = now - self.began
        end = '\r' if self.tty else '\n'
        sys.stderr.write(report.summary() + end)
        sys.stderr.flush()


def main(argv=None):
    args = parse_args(argv)
    keep_freed_memory()
    out = None
    writer = None
    server = None
    try:
        model = init_recognizer(args.config, args.checkpoint, args.device,
                                fuse_conv_bn=args.fuse_conv_bn,
                                engine=args.engine,
                                precision=args.precision)
        label_map = args.label_map or model.cfg.get('label_map')
        names = (read_label_map(label_map, model.cls_head.num_classes)
                 if label_map else None)
        out = open(args.out, 'w') if args.out else sys.stdout
        writer = (AnnotatedWriter(args.annotate, args.topk)
                  if args.annotate else None)
        progress = None
        if args.serve is not None:
            server = LiveServer(args.serve, args.serve_host)
            print(f'live page: {server.url}', file=sys.stderr)

        def on_prediction(pred):
            out.write(pred.to_json(scores=args.scores) + '\n')
            out.flush()
            if writer is not None:
                writer.update(pred)
            if server is not None:
                server.update(pred)

        def on_frame(frame, time_s):
            if writer is not None:
                writer.write(frame, time_s)
            if server is not None:
                server.update_frame(frame, time_s)
            if progress is not None:
                progress.tick()

        classifier = StreamClassifier(
            model, every=args.every, topk=args.topk, label_names=names,
            realtime=args.realtime, stall_timeout=args.stall_timeout,
            reconnect=args.reconnect, input_format=args.input_format,
            input_options=_options(args.input_option),
            on_prediction=on_prediction, on_frame=on_frame)
        if not args.no_progress:
            progress = Progress(classifier)
        report = classifier.run(args.source)
    except InferenceError as err:
        sys.exit(f'error: {err}')
    finally:
        if server is not None:
            server.close()
        if writer is not None:
            writer.close()
        if out is not None and out is not sys.stdout:
            out.close()
    if progress is not None and progress.tty:
        sys.stderr.write('\n')
    print(report.message, file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    if writer is not None:
        print(f'annotated video: {args.annotate}', file=sys.stderr)
    if report.end == 'stalled':
        # The reader thread is still blocked in a read of the stalled
        # source (stdin, a socket); Python's shutdown would wait on its
        # lock and abort. Everything is written and flushed: leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
    return 0 if report.end in ('ended', 'interrupted') else 2


if __name__ == '__main__':
    sys.exit(main())
