"""Decode only the frames a clip needs, at the size the pipeline needs.

A training clip of X3D-M uses 16 frames spread over 80 frames of the file,
and the file's keyframes are often 5 s apart, so a reader that decodes
every frame from the keyframe before the clip spends most of its time on
frames nobody looks at. :class:`SparseVideoReader` (PyAV, i.e. FFmpeg's own
decoders) avoids that work in three ways, none of which changes a pixel of
the frames it returns:

* It reads the packet index once (demuxing, no decoding) and starts at the
  last keyframe before each needed frame, jumping over whole stretches
  between clips when a later keyframe makes them unnecessary.
* It tells the decoder to drop *non-reference* frames it is not asked for
  (``skip_frame='NONREF'`` per packet): no other frame is predicted from
  them, so skipping them cannot alter the frames that are decoded.
* It converts only the needed frames, from the decoder's YUV straight to
  RGB at the target size in one swscale call, so no full-resolution RGB
  copy is ever made.

Frame ``i`` is the ``i``-th frame in presentation order, as decord counts
(``len(reader)`` equals ``decord.VideoReader``'s length on the files we
tested). Files whose packets carry no usable timestamps are decoded
sequentially from the start instead, counting output frames.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..video_io import VideoDecodeError, first_video_stream, require


class _Untimed(Exception):
    """The decoder's frames contradict the packet timestamps."""


class SparseVideoReader:
    """Random access to the frames of one video file.

    Args:
        filename (str): The video file.
        num_threads (int): Decoder threads; 1 (the default) leaves
            parallelism to the data-loader workers.

    Raises:
        MissingPackageError: PyAV (``av``) is not installed.
        FileNotFoundError, VideoDecodeError: The file is missing, has no
            video stream or no frames (PyAV's own errors for files it
            cannot parse).
    """

    def __init__(self, filename: str, num_threads: int = 1) -> None:
        av = require('av')
        if not osp.isfile(filename):
            raise FileNotFoundError(f'no such file: {filename}')
        self.filename = filename
        self.num_threads = num_threads
        self._container = av.open(filename)
        try:
            stream = first_video_stream(self._container)
            self.height, self.width = stream.height, stream.width
            rate = stream.average_rate or stream.guessed_rate or 0
            self.fps = float(rate)
            # Packets in decode order; empty ones are decoder flush markers.
            self._packets = [
                p for p in self._container.demux(stream) if p.size
            ]
            self._stream = stream
        except BaseException:
            self._container.close()
            raise
        if not self._packets:
            self.close()
            raise VideoDecodeError('the video has no frames')
        pts = [p.pts for p in self._packets]
        self._timed = None not in pts and len(set(pts)) == len(pts)
        if self._timed and stream.codec_context.has_b_frames and all(
                a < b for a, b in zip(pts, pts[1:])):
            # Frames are reordered but the timestamps are in decode order:
            # the container (e.g. AVI) made them up, so they cannot say
            # which frame is shown when.
            self._timed = False
        if self._timed:
            order = sorted(pts)
            self._rank = {t: i for i, t in enumerate(order)}
            # (decode-order position, frame index) of every keyframe.
            self._keys = [(j, self._rank[p.pts])
                          for j, p in enumerate(self._packets)
                          if p.is_keyframe]
        self.decoded_frames = 0  # frames the decoder produced (for tests)

    def __len__(self) -> int:
        return len(self._packets)

    def close(self) -> None:
        self._packets = []
        self._container.close()

    def __enter__(self) -> 'SparseVideoReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get_batch(self,
                  indices: Sequence[int],
                  size: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as an
        ``(N, H, W, 3)`` RGB uint8 array, at ``size = (height, width)``
        (default: the file's size). Shrinking averages pixels (swscale's
        area filter); enlarging is bilinear."""
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError('no frame indices given')
        n = len(self)
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise IndexError(f'frame indices {bad[:5]} out of range for a '
                             f'video of {n} frames ({self.filename})')
        height, width = size or (self.height, self.width)
        shrink = height * width < self.height * self.width
        convert = dict(
            width=width,
            height=height,
            format='rgb24',
            interpolation='AREA' if shrink else 'BILINEAR')
        wanted = sorted(set(indices))
        frames = None
        if self._timed:
            frames = self._decode_sparse(wanted, convert)
        if frames is None:
            frames = self._decode_sequential(wanted, convert)
        return np.stack([frames[i] for i in indices])

    def _codec(self):
        av = require('av')
        codec = av.CodecContext.create(self._stream.codec_context.name, 'r')
        codec.extradata = self._stream.codec_context.extradata
        # Size and pixel format come from the bitstream; some codecs (e.g.
        # MPEG-4 part 2 in AVI) also need these from the container.
        codec.width, codec.height = self.width, self.height
        codec.thread_count = self.num_threads
        codec.thread_type = 'SLICE' if self.num_threads > 1 else 'NONE'
        return codec

    def _decode_sparse(self, wanted: List[int],
                       convert: Dict) -> Optional[Dict[int, np.ndarray]]:
        """Keyframe-seeking decode with non-reference frames skipped;
        None if some frame did not come out or the decoder's frames
        contradict the timestamps (the caller then decodes sequentially)."""
        packets, rank = self._packets, self._rank
        want = set(wanted)
        got: Dict[int, np.ndarray] = {}
        shown = -1  # rank of the last frame the decoder put out
        # Where decoding of the next needed frame starts, worked out again
        # only when a needed frame has come out (``done``: how many had).
        done, nxt = 0, -1

        def take(frames) -> None:
            nonlocal shown
            for frame in frames:
                self.decoded_frames += 1
                i = rank.get(frame.pts)
                if i is None or i <= shown:
                    raise _Untimed
                shown = i
                if i in want:
                    got[i] = frame.to_ndarray(**convert)

        codec = self._codec()
        j = self._start_packet(wanted[0])
        try:
            while j < len(packets) and len(got) < len(want):
                packet = packets[j]
                if len(got) != done:  # a needed frame came out
                    done = len(got)
                    nxt = self._start_packet(min(want - got.keys()))
                # The next needed frame is behind a keyframe further on (so
                # every earlier needed frame is out): jump to that keyframe.
                if nxt > j:
                    take(codec.decode(None))
                    codec, shown, j = self._codec(), -1, nxt
                    continue
                codec.skip_frame = ('DEFAULT'
                                    if rank[packet.pts] in want else 'NONREF')
                take(codec.decode(packet))
                j += 1
            if len(got) < len(want):
                codec.skip_frame = 'DEFAULT'
                take(codec.decode(None))
        except _Untimed:
            # Frames come out of timestamp order: the timestamps cannot be
            # trusted; decode sequentially instead.
            self._timed = False
            return None
        return got if len(got) == len(want) else None

    def _start_packet(self, index: int) -> int:
        """Decode-order position of the last keyframe shown no later than
        frame ``index``."""
        best = 0
        for j, shown in self._keys:
            if shown <= index:
                best = j
        return best

    def _decode_sequential(self, wanted: List[int],
                           convert: Dict) -> Dict[int, np.ndarray]:
        """Decode every frame from the start, counting output frames (for
        files without usable timestamps)."""
        want = set(wanted)
        got: Dict[int, np.ndarray] = {}
        codec = self._codec()
        count = 0
        for packet in self._packets + [None]:
            for frame in codec.decode(packet):
                self.decoded_frames += 1
                if count in want:
                    got[count] = frame.to_ndarray(**convert)
                count += 1
            if len(got) == len(want):
                break
        missing = [i for i in wanted if i not in got]
        if missing:
            if not got:
                raise VideoDecodeError('no frame could be decoded')
            # Fewer frames came out than the index promised (a truncated
            # stream): use the last decoded frame, as decord's readers do
            # for indices past the end.
            last = got[max(got)]
            got.update({i: last for i in missing})
        return got
