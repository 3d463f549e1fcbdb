"""Classify a live video source as it arrives.

A source is anything FFmpeg (through PyAV) opens: a file (played as fast
as it decodes, or at its own rate with ``realtime=True``), a pipe
(``'-'`` for stdin, or any readable file object), a network URL
(``udp://``, ``http://``, ``rtsp://``, ``srt://`` ...) or a camera
(``/dev/videoN`` with ``input_format='v4l2'``). Everything after opening
is shared by all of them::

    reader thread            main loop                    model thread
    demux + decode  ──────►  frame buffer  ──► windows ──►  newest window
    (timestamped frames,     (bounded: a full buffer       only: an older
     paced for realtime)      drops its oldest frame,       one not yet taken
                              counted)                      is skipped, counted

A window is one clip of the config's test pipeline: its frame sampler's
``clip_len`` frames every ``frame_interval``, resampled to its
``target_fps`` from the source's rate exactly as
:func:`x3d_plugin.datasets.transforms.clip_frame_indices` does for the
offline timeline (:func:`x3d_plugin.apis.predict_timeline`), counting
frames by their timestamps; the frames are converted to RGB at the test
short side as :class:`x3d_plugin.PyAVSparseDecode` converts them, and the
pipeline's steps after decoding (crops, normalisation by the model's data
preprocessor) are the config's own. So a window ending at frame ``n`` of a
stream scores exactly what the timeline scores for the window of the same
frames of the same video.
"""
import collections
import json
import math
import os.path as osp
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dataset import Compose

from .inference import InferenceError, _topk

#: URL schemes opened as network sources (``reconnect`` applies to them).
NETWORK_SCHEMES = ('udp', 'rtp', 'rtsp', 'rtmp', 'http', 'https', 'srt',
                   'tcp')


#: FFmpeg input options for a source that is not a file (the given ones
#: win): probe 0.5 s instead of FFmpeg's 5 s, so the first prediction
#: does not wait for 5 s of stream.
LIVE_PROBING = {'analyzeduration': '500000', 'probesize': '65536'}


class StreamError(InferenceError):
    """A source that cannot be opened, or a test pipeline a stream cannot
    follow."""


def is_network_source(source) -> bool:
    """Whether ``source`` is a URL of a network protocol."""
    return (isinstance(source, str) and '://' in source
            and source.split('://', 1)[0].lower() in NETWORK_SCHEMES)


class ClipSpec:
    """The clip of a config's test pipeline, for frames that arrive one by
    one: which frames a window ending at a given frame takes, the size they
    are converted to, and the pipeline steps after decoding.

    Args:
        test_pipeline (list[dict]): The config's ``test_pipeline``: an init
            step (``x3d_plugin.PyAVInitAtScale`` or
            ``x3d_plugin.DecordInitAtScale`` for the test short side, or
            one of MMAction2's that keeps the size), one
            ``x3d_plugin.SlowFastSampleFrames`` or ``SampleFrames``, a
            decode step, then the steps that follow (crops, format, pack).

    Raises:
        StreamError: for a pipeline without exactly one such sampler or
            without a step after it.
    """

    def __init__(self, test_pipeline: Sequence[dict]) -> None:
        from mmaction.datasets.transforms import SampleFrames

        from x3d_plugin.datasets.transforms import SlowFastSampleFrames
        steps = Compose(test_pipeline).transforms
        at = [i for i, step in enumerate(steps)
              if type(step) in (SlowFastSampleFrames, SampleFrames)]
        if len(at) != 1 or at[0] + 1 >= len(steps):
            raise StreamError(
                'a stream needs exactly one x3d_plugin.SlowFastSampleFrames '
                'or SampleFrames in the test pipeline, followed by a decode '
                f'step; found {len(at)} sampler(s) in {test_pipeline}')
        self.sampler = steps[at[0]]
        self._init_steps = steps[:at[0]]
        # steps[at + 1] decodes from a file; a stream's frames are decoded
        # already, so the window goes on from the step after it.
        self.after_decode = Compose(steps[at[0] + 2:])

    def output_size(self, height: int, width: int):
        """(height, width) the frames are converted to: the init step's
        test short side, or the source's size."""
        for step in reversed(self._init_steps):
            if hasattr(step, '_output_size'):  # x3d_plugin's *InitAtScale
                return step._output_size(height, width)
        return height, width

    def span(self, fps: float) -> float:
        """Source frames one window spans (see
        :func:`x3d_plugin.datasets.transforms.clip_span`)."""
        from x3d_plugin.datasets.transforms import clip_span
        return clip_span(self.sampler, fps)

    def window_indices(self, last: int, fps: float) -> np.ndarray:
        """Frame indices of the window whose last frame is ``last``: the
        sampler's clip starting ``span - 1`` frames earlier."""
        from x3d_plugin.datasets.transforms import clip_frame_indices
        start = last + 1 - self.span(fps)
        inds = clip_frame_indices(self.sampler, start, last + 1, fps)
        # MMAction2's SampleFrames rounds its start: keep the last at last.
        return inds + (last - int(inds.max()))

    def first_last(self, fps: float) -> int:
        """The first frame that ends a complete window."""
        return int(math.ceil(self.span(fps))) - 1


def rgb(frame, size) -> np.ndarray:
    """``frame`` (a PyAV ``VideoFrame``) as HxWx3 RGB uint8 at ``size`` =
    (height, width), converted as :class:`x3d_plugin.PyAVSparseDecode`
    converts (swscale's area filter to shrink, bilinear to enlarge)."""
    height, width = size
    shrink = height * width < frame.height * frame.width
    return frame.to_ndarray(width=width, height=height, format='rgb24',
                            interpolation='AREA' if shrink else 'BILINEAR')


@dataclass
class Prediction:
    """One window's prediction.

    Attributes:
        frame (int): Index of the window's last frame in the stream.
        stream_time (float): Its time in the stream (s, from the first
            frame).
        start_time (float): Time of the window's first frame (s).
        wall_time (float): When the prediction was made (Unix time).
        latency (float): Seconds from the arrival of the window's last
            frame to the prediction.
        topk (list[dict]): ``{'index', 'label', 'score'}``, best first.
        scores (np.ndarray): Scores of all classes.
        frame_inds (np.ndarray): The window's frame indices.
    """
    frame: int
    stream_time: float
    start_time: float
    wall_time: float
    latency: float
    topk: List[Dict]
    scores: np.ndarray = field(repr=False)
    frame_inds: np.ndarray = field(repr=False)

    def to_json(self, scores: bool = False) -> str:
        """A JSON line: the attributes except ``scores`` (all classes'
        scores too with ``scores``) and ``frame_inds``."""
        out = dict(frame=self.frame, stream_time=round(self.stream_time, 6),
                   start_time=round(self.start_time, 6),
                   wall_time=round(self.wall_time, 6),
                   latency=round(self.latency, 6), topk=self.topk)
        if scores:
            out['scores'] = [float(s) for s in self.scores]
        return json.dumps(out)


@dataclass
class StreamReport:
    """What happened to a stream.

    Attributes:
        source (str): The source as given.
        end (str): ``'ended'``, ``'stalled'``, ``'broke'`` or
            ``'interrupted'``.
        message (str): One line naming the source and how it ended.
        frames (int): Frames decoded.
        windows (int): Complete windows formed.
        predictions (int): Windows predicted.
        skipped_windows (int): Windows replaced by a newer one before the
            model took them.
        dropped_frames (int): Frames lost: dropped from the full frame
            buffer, or missing from the source by their timestamps.
        corrupt_packets (int): Packets the decoder rejected (skipped).
        reconnects (int): Attempts to open a network source again.
        seconds (float): Wall time from opening to the end.
        latencies (list[float]): Per prediction, seconds from its last
            frame's arrival.
    """
    source: str
    end: str = 'ended'
    message: str = ''
    frames: int = 0
    windows: int = 0
    predictions: int = 0
    skipped_windows: int = 0
    dropped_frames: int = 0
    corrupt_packets: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    latencies: List[float] = field(default_factory=list, repr=False)

    def latency(self, q: float) -> float:
        """The ``q``-quantile (0-1) of the latencies in seconds (nan if no
        prediction)."""
        if not self.latencies:
            return float('nan')
        return float(np.quantile(np.asarray(self.latencies), q))

    def summary(self) -> str:
        """One line: predictions per second, latency p50/p95, skipped
        windows, dropped frames."""
        rate = self.predictions / self.seconds if self.seconds else 0.0
        return (f'{self.frames} frames, {self.predictions} predictions '
                f'({rate:.2f}/s), latency p50 '
                f'{self.latency(0.5) * 1e3:.0f} ms p95 '
                f'{self.latency(0.95) * 1e3:.0f} ms, '
                f'{self.skipped_windows} skipped windows, '
                f'{self.dropped_frames} dropped frames')


class _FrameBuffer:
    """Timestamped frames from the reader to the main loop. When full, a
    live source's oldest frame is dropped (counted) so that its reader
    never waits; a file read as fast as it decodes waits instead (nothing
    is lost by waiting for a file)."""

    def __init__(self, capacity: int, wait_when_full: bool = False) -> None:
        self._items = collections.deque()
        self._capacity = capacity
        self._wait = wait_when_full
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.first_time = None  # timestamp of the source's first frame

    def close(self) -> None:
        """No more items are taken: a waiting ``put`` returns."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def put(self, item) -> None:
        with self._cond:
            if self._wait:
                self._cond.wait_for(
                    lambda: len(self._items) < self._capacity
                    or self._closed)
            elif len(self._items) >= self._capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()

    def put_end(self, item) -> None:
        """An end marker: never dropped."""
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float):
        """The oldest item; None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item


class _Latest:
    """A one-window slot: for a live source a new window replaces one not
    yet taken (the newest wins; the replaced one is counted as skipped);
    for a file read as fast as it decodes, ``put`` waits for the model
    instead (every window is predicted)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._window = None
        self._closed = False
        self.skipped = 0

    def put(self, window, wait: bool = False) -> None:
        with self._cond:
            if wait:
                self._cond.wait_for(lambda: self._window is None
                                    or self._closed)
            if self._window is not None:
                self.skipped += 1
            self._window = window
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def take(self):
        """The newest window; None once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._window is not None
                                or self._closed)
            window, self._window = self._window, None
            self._cond.notify_all()
            return window


_END = 'end'


def open_source(source: Union[str, IO[bytes]],
                input_format: Optional[str] = None,
                options: Optional[Dict[str, str]] = None,
                timeout: Optional[float] = None):
    """Open ``source`` with PyAV.

    Args:
        source (str | file object): A path, ``'-'`` (stdin), a URL, a
            device (``/dev/video0`` with ``input_format='v4l2'``) or a
            readable binary file object.
        input_format (str, optional): FFmpeg's input format (``-f``), e.g.
            ``'v4l2'``, ``'mpegts'``; None lets FFmpeg probe.
        options (dict, optional): FFmpeg options of the input or protocol
            (e.g. ``{'video_size': '640x480', 'framerate': '30'}`` for
            v4l2, ``{'rtsp_transport': 'tcp'}``).
        timeout (float, optional): Seconds to wait when opening and for
            each read of a network source.

    Returns:
        av.container.InputContainer

    Raises:
        StreamError: naming the source and FFmpeg's reason.
    """
    from x3d_plugin.datasets.video_io import require
    av = require('av')
    target = sys.stdin.buffer if source == '-' else source
    if hasattr(target, 'read1'):
        target = _Available(target)
    if (isinstance(source, str) and source.startswith('/dev/video')
            and input_format is None):
        input_format = 'v4l2'
    if not (isinstance(target, str) and osp.isfile(target)):
        # A live source: FFmpeg's default probing reads up to 5 s of it
        # before the first frame comes out; a live source needs less.
        options = dict(LIVE_PROBING, **(options or {}))
    try:
        return av.open(target, format=input_format, options=options or {},
                       timeout=timeout if is_network_source(source) else None)
    except Exception as err:
        hint = ''
        if isinstance(err, av.error.ProtocolNotFoundError):
            # PyAV's wheels leave some protocols out (srt:// among them).
            hint = ('. This PyAV\'s FFmpeg lacks the protocol: install a '
                    'PyAV built against an FFmpeg that has it, or receive '
                    'with the ffmpeg program and pipe it in: ffmpeg -i URL '
                    '-c copy -f mpegts - | python tools/stream.py CONFIG '
                    'CHECKPOINT -')
        raise StreamError(f'cannot open {_name(source)}: {err}{hint}') \
            from err


def _seconds(frame) -> Optional[float]:
    """The presentation time of a PyAV frame in seconds (None: none)."""
    return (float(frame.pts * frame.time_base)
            if frame.pts is not None else None)


class _Available:
    """A pipe for FFmpeg whose reads return the bytes there are (up to the
    size asked for) instead of waiting until the size is filled: a live
    pipe's frames come out as they arrive, not 32 KiB at a time."""

    def __init__(self, file) -> None:
        self._file = file
        self.name = getattr(file, 'name', None)

    def read(self, size: int = -1) -> bytes:
        return self._file.read1(size)


def _name(source) -> str:
    if source == '-':
        return 'stdin'
    return source if isinstance(source, str) else repr(source)


class StreamClassifier:
    """Classify windows of a live source as frames arrive.

    Args:
        model: From :func:`x3d_plugin.apis.init_recognizer`; its
            ``cfg.test_pipeline`` defines the window.
        every (int, optional): Source frames between predictions. Defaults
            to one window's span (windows touch, as the offline timeline's
            default stride).
        topk (int): Classes per prediction. Defaults to 5.
        label_names (list[str], optional): Class names.
        realtime (bool): Pace a file at its own frame rate (live sources
            pace themselves). Defaults to False.
        stall_timeout (float): Seconds without a frame after which the
            stream counts as stalled. Defaults to 10.
        reconnect (int): Times to open a network source again after it
            ends, stalls or breaks. Defaults to 0.
        input_format (str, optional): FFmpeg input format (see
            :func:`open_source`).
        input_options (dict, optional): FFmpeg input options.
        buffer_frames (int, optional): Capacity of the frame buffer
            between the reader and the windows; defaults to twice a
            window's span, at least 32.
        predict (callable, optional): Scores a packed window (the dict of
            ``inputs`` and ``data_samples`` that ``model.test_step`` takes)
            as a 1-D array; defaults to the model's ``test_step``.
        on_prediction (callable, optional): Called with each
            :class:`Prediction` in the model thread.
        on_frame (callable, optional): Called with each decoded PyAV frame
            and its stream time in the main loop (e.g. an annotated
            video writer); it should be fast.
    """

    def __init__(self,
                 model,
                 every: Optional[int] = None,
                 topk: int = 5,
                 label_names: Optional[Sequence[str]] = None,
                 realtime: bool = False,
                 stall_timeout: float = 10.0,
                 reconnect: int = 0,
                 input_format: Optional[str] = None,
                 input_options: Optional[Dict[str, str]] = None,
                 buffer_frames: Optional[int] = None,
                 predict: Optional[Callable[[Dict], np.ndarray]] = None,
                 on_prediction: Optional[Callable[[Prediction], None]] = None,
                 on_frame: Optional[Callable] = None) -> None:
        if every is not None and every < 1:
            raise StreamError(f'every must be at least 1 frame, got {every}')
        if stall_timeout <= 0:
            raise StreamError(
                f'stall_timeout must be positive, got {stall_timeout}')
        if reconnect < 0:
            raise StreamError(f'reconnect must be >= 0, got {reconnect}')
        self.model = model
        self.spec = ClipSpec(model.cfg.test_pipeline)
        self.every = every
        self.topk = topk
        self.label_names = label_names
        self.realtime = realtime
        self.stall_timeout = stall_timeout
        self.reconnect = reconnect
        self.input_format = input_format
        self.input_options = input_options
        self.buffer_frames = buffer_frames
        self.predict = predict or self._model_scores
        self.on_prediction = on_prediction
        self.on_frame = on_frame
        self.report: Optional[StreamReport] = None
        self._stop = threading.Event()

    def stop(self) -> None:
        """End :meth:`run` after the frame in hand (from any thread)."""
        self._stop.set()

    def _model_scores(self, batch: Dict) -> np.ndarray:
        with torch.no_grad():
            sample = self.model.test_step(batch)[0]
        return sample.pred_score.float().cpu().numpy()

    # The reader thread -----------------------------------------------------

    def _read(self, container, stream, buffer: _FrameBuffer,
              report: StreamReport) -> None:
        """Decode ``stream`` into ``buffer`` until it ends or breaks; the
        last item is an end marker ``(_END, kind, reason)``."""
        import av
        paced_from = None  # (wall time, stream time) of the first frame
        kind, reason = 'ended', ''
        try:
            for packet in container.demux(stream):
                if self._stop.is_set():
                    break
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    # A corrupt packet: the decoder resyncs at the next.
                    report.corrupt_packets += 1
                    continue
                for frame in frames:
                    t = _seconds(frame)
                    if self.realtime and t is not None:
                        if paced_from is None:
                            paced_from = (time.monotonic(), t)
                        wait = paced_from[0] + t - paced_from[1] \
                            - time.monotonic()
                        if wait > 0:
                            time.sleep(wait)
                    report.frames += 1
                    if buffer.first_time is None:
                        # Before any put: the first frame may be dropped.
                        buffer.first_time = t
                    buffer.put((frame, t, time.monotonic()))
        except Exception as err:  # FFmpeg's errors from a broken stream
            kind, reason = 'broke', f'{type(err).__name__}: {err}'
            try:  # the frames still in the decoder
                for frame in stream.codec_context.decode(None):
                    report.frames += 1
                    buffer.put((frame, _seconds(frame), time.monotonic()))
            except Exception:  # a decoder that cannot even flush
                pass
        buffer.put_end((_END, kind, reason))

    # The model thread ------------------------------------------------------

    def _serve(self, slot: _Latest, report: StreamReport, errors: list):
        while True:
            window = slot.take()
            if window is None:
                return
            try:
                self._predict_window(window, report)
            except Exception as err:  # raised by run() in the caller
                errors.append(err)
                self._stop.set()
                slot.close()  # a file's reader may wait for the slot
                return

    def _predict_window(self, window: Dict, report: StreamReport) -> None:
        """Score ``window`` and hand its prediction on."""
        data = self.spec.after_decode(window['results'])
        scores = np.asarray(self.predict(
            dict(inputs=[data['inputs']],
                 data_samples=[data['data_samples']])))
        now = time.monotonic()
        pred = Prediction(
            frame=window['frame'], stream_time=window['time'],
            start_time=window['start_time'], wall_time=time.time(),
            latency=now - window['arrival'],
            topk=_topk(scores, self.topk, self.label_names),
            scores=scores, frame_inds=window['results']['frame_inds'])
        report.predictions += 1
        report.latencies.append(pred.latency)
        if self.on_prediction is not None:
            self.on_prediction(pred)

    # The main loop ---------------------------------------------------------

    def run(self, source: Union[str, IO[bytes]]) -> StreamReport:
        """Classify ``source`` until it ends, stalls or breaks (a network
        source reopened up to ``reconnect`` times) or :meth:`stop` is
        called. Every prediction made is passed to ``on_prediction``
        before this returns, the last pending window included.

        A stalled source's reader thread (a daemon) stays blocked in its
        read until the source closes: a program that ends after a stall
        of stdin should leave with ``os._exit`` once its output is
        flushed, as ``tools/stream.py`` does.

        Returns:
            StreamReport: with ``message``, one line naming the source and
            how it ended.

        Raises:
            StreamError: if the source cannot be opened at all.
        """
        report = self.report = StreamReport(source=_name(source))
        slot = _Latest()
        errors: list = []
        model_thread = threading.Thread(
            target=self._serve, args=(slot, report, errors), daemon=True)
        model_thread.start()
        began = time.monotonic()
        attempts = 0
        kind, reason = 'ended', ''
        self._stop.clear()
        try:
            while True:
                try:
                    container = open_source(
                        source, self.input_format, self.input_options,
                        timeout=self.stall_timeout)
                except StreamError as err:
                    if (is_network_source(source)
                            and attempts < self.reconnect):
                        attempts += 1
                        report.reconnects += 1
                        time.sleep(min(1.0, self.stall_timeout))
                        continue
                    if report.frames == 0:
                        raise
                    # Reopening failed: the stream ended as it last did.
                    break
                self._reader = self._buffer = None
                try:
                    kind, reason = self._segment(container, slot, report)
                except BaseException:
                    self._stop.set()
                    raise
                finally:
                    self._close(container)
                if (kind == 'interrupted' or not is_network_source(source)
                        or attempts >= self.reconnect):
                    break
                attempts += 1
                report.reconnects += 1
        except KeyboardInterrupt:
            kind, reason = 'interrupted', 'interrupted'
        finally:
            slot.close()
            model_thread.join()
            report.skipped_windows = slot.skipped
            report.seconds = time.monotonic() - began
        if errors:
            raise errors[0]
        report.end = kind
        report.message = self._message(report, kind, reason)
        return report

    def _close(self, container) -> None:
        """Close ``container`` once its reader thread is done with it; a
        reader still blocked in a read (a stalled source) keeps it: closing
        it under the reader would crash FFmpeg."""
        reader = self._reader
        if self._buffer is not None:
            self._buffer.close()
        if reader is not None:
            reader.join(timeout=1.0)
            if reader.is_alive():
                return
        container.close()

    def _message(self, report: StreamReport, kind: str, reason: str) -> str:
        where = f'{report.source} after {report.frames} frames'
        extra = (f'; {report.corrupt_packets} corrupt packets skipped'
                 if report.corrupt_packets else '')
        if kind == 'stalled':
            return (f'stream stalled: no frame for {self.stall_timeout:g} s '
                    f'from {where}{extra}')
        if kind == 'broke':
            return f'stream broke: {where} ({reason}){extra}'
        if kind == 'interrupted':
            return f'stream interrupted: {where}{extra}'
        return f'stream ended: {where}{extra}'

    def _segment(self, container, slot: _Latest, report: StreamReport):
        """Windows from one opening of the source; returns (end kind,
        reason)."""
        from x3d_plugin.datasets.video_io import first_video_stream
        try:
            stream = first_video_stream(container)
        except Exception as err:
            return 'broke', str(err)
        rate = stream.average_rate or stream.guessed_rate or 0
        fps = float(rate)
        spec = self.spec
        span = spec.span(fps)
        every = self.every or max(1, int(round(span)))
        capacity = self.buffer_frames or max(32, 2 * int(math.ceil(span)))
        is_file = self._is_file(container)
        buffer = _FrameBuffer(capacity, wait_when_full=is_file)
        reader = threading.Thread(
            target=self._read, args=(container, stream, buffer, report),
            daemon=True)
        reader.start()
        self._reader, self._buffer = reader, buffer
        size = None
        ring: 'collections.OrderedDict[int, tuple]' = \
            collections.OrderedDict()
        keep = int(math.ceil(span)) + 1
        t0, last, due = None, -1, spec.first_last(fps)
        counted_drops = 0
        while True:
            if self._stop.is_set():
                return 'interrupted', ''
            item = buffer.get(self.stall_timeout)
            if item is None:
                return 'stalled', ''
            if item[0] is _END:
                reader.join()
                return item[1], item[2]
            frame, t, arrival = item
            if size is None:
                original = (frame.height, frame.width)
                size = spec.output_size(*original)
            if t is not None and t0 is None:
                # The first frame decoded, even if the buffer dropped it.
                t0 = buffer.first_time if buffer.first_time is not None \
                    else t
            # Frames are counted by their timestamps, so a frame lost on
            # the way leaves a gap instead of shifting the later ones.
            index = last + 1
            if t is not None and fps > 0:
                index = max(last + 1, int(round((t - t0) * fps)))
            if t is not None and fps > 0:
                # Frames the buffer dropped show up here as gaps too.
                report.dropped_frames += index - last - 1
            else:
                report.dropped_frames += buffer.dropped - counted_drops
                counted_drops = buffer.dropped
            last = index
            time_s = (t - t0) if t is not None else index / (fps or 30.0)
            if self.on_frame is not None:
                self.on_frame(frame, time_s)
            ring[index] = (rgb(frame, size), time_s)
            while len(ring) > keep:
                ring.popitem(last=False)
            if index < due:
                continue
            while due <= index:
                due += every
            inds = spec.window_indices(index, fps)
            imgs = [self._nearest(ring, i) for i in inds]
            report.windows += 1
            slot.put(dict(
                frame=index, time=time_s, arrival=arrival,
                start_time=self._nearest(ring, int(inds[0]), times=True),
                results=dict(
                    filename=report.source, label=-1, start_index=0,
                    modality='RGB', imgs=imgs, frame_inds=inds,
                    total_frames=index + 1, avg_fps=fps,
                    original_shape=original, img_shape=size,
                    scale_factor=np.array(
                        [size[1] / original[1], size[0] / original[0]],
                        dtype=np.float32),
                    clip_len=spec.sampler.clip_len,
                    frame_interval=spec.sampler.frame_interval,
                    num_clips=1)), wait=is_file)

    def _is_file(self, container) -> bool:
        """A file read as fast as it decodes (not live, not paced)."""
        import os.path as osp
        name = getattr(container, 'name', '')
        return (not self.realtime and isinstance(name, str)
                and osp.isfile(name))

    @staticmethod
    def _nearest(ring, index: int, times: bool = False):
        """The frame ``index`` from ``ring``, or the nearest earlier one
        kept (a frame missing from the source), else the nearest later."""
        if index in ring:
            entry = ring[index]
        else:
            earlier = [i for i in ring if i < index]
            key = max(earlier) if earlier else min(ring)
            entry = ring[key]
        return entry[1] if times else entry[0]


def stream_predictions(model, source, **kwargs) -> List[Prediction]:
    """Run a :class:`StreamClassifier` over ``source`` and collect its
    predictions (for a source that ends; keyword arguments are the
    classifier's). The report is in the ``report`` attribute of the
    returned list."""
    predictions = _Predictions()
    user = kwargs.pop('on_prediction', None)

    def collect(pred):
        predictions.append(pred)
        if user is not None:
            user(pred)

    classifier = StreamClassifier(model, on_prediction=collect, **kwargs)
    predictions.report = classifier.run(source)
    return predictions


class _Predictions(list):
    report: Optional[StreamReport] = None
