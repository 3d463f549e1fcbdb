"""Decode only the frames a clip needs, at the size the pipeline needs.

A training clip of X3D-M uses 16 frames spread over 80 frames of the file,
and the file's keyframes are often 5 s apart, so a reader that decodes
every frame from the keyframe before the clip spends most of its time on
frames nobody looks at. :class:`SparseVideoReader` (PyAV, i.e. FFmpeg's own
decoders) avoids that work in three ways, none of which changes a pixel of
the frames it returns:

* It reads the packet index once (demuxing, no decoding) and starts at the
  last keyframe before each needed frame, jumping over whole stretches
  between clips when a later keyframe makes them unnecessary. The index
  keeps only each packet's timestamp and keyframe flag and the orderings
  derived from them (about 32 bytes a frame: 3.5 MB for an hour at
  30 fps), never the packets' data: decoding seeks in the file to the
  keyframe and reads from there, so the memory a reader needs does not
  grow with the file's size, and one reader can serve any number of
  :meth:`SparseVideoReader.get_batch` calls (a timeline over a long video)
  without reading the file again for each.
* It tells the decoder to drop *non-reference* frames it is not asked for
  (``skip_frame='NONREF'`` per packet): no other frame is predicted from
  them, so skipping them cannot alter the frames that are decoded.
* It converts only the needed frames, from the decoder's YUV straight to
  RGB at the target size in one swscale call, so no full-resolution RGB
  copy is ever made.

Frame ``i`` is the ``i``-th frame in presentation order, as decord counts
(``len(reader)`` equals ``decord.VideoReader``'s length on the files we
tested). Files whose packets carry no usable timestamps are decoded
sequentially from the start instead, counting output frames; a later call
whose frames all come after the last one decoded goes on from there.
"""
import itertools
import os.path as osp
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

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

    Attributes:
        decoded_frames (int): Frames the decoder has put out so far.
        demuxed_packets (int): Packets read from the file for decoding so
            far (the index read on opening not counted).
        seeks (int): Seeks in the file so far.

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
            self._stream = stream
            # Decode order; empty packets are decoder flush markers.
            pts, keys = [], []
            for packet in self._container.demux(stream):
                if packet.size:
                    pts.append(packet.pts)
                    keys.append(packet.is_keyframe)
        except BaseException:
            self._container.close()
            raise
        self._num_packets = len(pts)
        if not pts:
            self.close()
            raise VideoDecodeError('the video has no frames')
        self._timed = None not in pts and len(set(pts)) == len(pts)
        if self._timed and stream.codec_context.has_b_frames and all(
                a < b for a, b in zip(pts, pts[1:])):
            # Frames are reordered but the timestamps are in decode order:
            # the container (e.g. AVI) made them up, so they cannot say
            # which frame is shown when.
            self._timed = False
        if self._timed:
            self._pts = np.asarray(pts, dtype=np.int64)  # decode order
            self._sorted_pts = np.sort(self._pts)  # presentation order
            # Frame index (rank in presentation order) by decode position.
            self._rank = np.searchsorted(self._sorted_pts, self._pts)
            self._position_of_rank = np.argsort(self._rank)
            self._key_pos = np.flatnonzero(np.asarray(keys, dtype=bool))
            self._key_rank = self._rank[self._key_pos]
            self._key_rank_sorted = bool(np.all(np.diff(self._key_rank) >= 0))
        # A sequential decode in progress (untimed files): the demuxed
        # packets, the decoder and how many frames it has put out.
        self._sequential = None
        self.decoded_frames = 0
        self.demuxed_packets = 0
        self.seeks = 0

    def __len__(self) -> int:
        return self._num_packets

    def close(self) -> None:
        self._sequential = None
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

    def _demux(self):
        """The file's packets in decode order, flush markers left out."""
        for packet in self._container.demux(self._stream):
            if packet.size:
                self.demuxed_packets += 1
                yield packet

    def _rewind(self):
        """Packets from the file's start: a fresh container, since a seek to
        0 is not exact in every format."""
        av = require('av')
        self._container.close()
        self._container = av.open(self.filename)
        self._stream = first_video_stream(self._container)
        return self._demux()

    def _packets_from(self, position: int) -> Iterator:
        """The packets from decode-order ``position`` on, checked against
        the index. The seek lands on a keyframe at or before the one asked
        for in every format we know; where it lands after it, or cannot
        seek, the packets are read from the file's start instead (a fresh
        container). The start itself is sought too, checked the same way:
        opening the file again for every clip that starts in its first
        GOP would cost more."""
        try:
            self._container.seek(int(self._pts[position]), backward=True,
                                 any_frame=False, stream=self._stream)
        except Exception:  # a format PyAV cannot seek in
            packets, at = None, -1
        else:
            self.seeks += 1
            packets = self._demux()
            first = next(packets, None)
            at = -1 if first is None else self._position(first.pts)
        if 0 <= at <= position:
            packets = itertools.chain([first], packets)
        else:
            packets, at = self._rewind(), 0
        for packet in packets:
            if at >= len(self._pts) or packet.pts != self._pts[at]:
                # The demuxer disagrees with the index read on opening.
                raise _Untimed
            if at >= position:
                yield packet
            at += 1

    def _position(self, pts) -> int:
        """Decode-order position of the packet with timestamp ``pts``
        (-1: not in the index)."""
        i = self._frame_index(pts)
        return -1 if i is None else int(self._position_of_rank[i])

    def _frame_index(self, pts) -> Optional[int]:
        """Frame index of the frame with timestamp ``pts`` (None: none)."""
        if pts is None:
            return None
        i = int(np.searchsorted(self._sorted_pts, pts))
        if i == len(self._sorted_pts) or self._sorted_pts[i] != pts:
            return None
        return i

    def _decode_sparse(self, wanted: List[int],
                       convert: Dict) -> Optional[Dict[int, np.ndarray]]:
        """Keyframe-seeking decode with non-reference frames skipped;
        None if some frame did not come out or the decoder's frames
        contradict the timestamps (the caller then decodes sequentially)."""
        rank = self._rank
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
                i = self._frame_index(frame.pts)
                if i is None or i <= shown:
                    raise _Untimed
                shown = i
                if i in want:
                    got[i] = frame.to_ndarray(**convert)

        codec = self._codec()
        j = self._start_packet(wanted[0])
        try:
            packets = self._packets_from(j)
            while j < len(self) and len(got) < len(want):
                if len(got) != done:  # a needed frame came out
                    done = len(got)
                    nxt = self._start_packet(min(want - got.keys()))
                # The next needed frame is behind a keyframe further on (so
                # every earlier needed frame is out): jump to that keyframe.
                if nxt > j:
                    take(codec.decode(None))
                    codec, shown, j = self._codec(), -1, nxt
                    packets = self._packets_from(j)
                    continue
                packet = next(packets, None)
                if packet is None:
                    break
                codec.skip_frame = ('DEFAULT'
                                    if rank[j] in want else 'NONREF')
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
        """Decode-order position of the last keyframe (in decode order)
        shown no later than frame ``index``; 0 if there is none."""
        if self._key_rank_sorted:
            # Keyframes are shown in decode order (every file we know):
            # a binary search instead of a pass over all of them.
            k = int(np.searchsorted(self._key_rank, index, side='right'))
            return int(self._key_pos[k - 1]) if k else 0
        fits = self._key_pos[self._key_rank <= index]
        return int(fits.max()) if len(fits) else 0

    def _decode_sequential(self, wanted: List[int],
                           convert: Dict) -> Dict[int, np.ndarray]:
        """Decode every frame in order, counting output frames (for files
        without usable timestamps); from the start, or on from the last
        call's position when every wanted frame comes after it."""
        want = set(wanted)
        got: Dict[int, np.ndarray] = {}
        state = self._sequential
        if state is None or wanted[0] < state['count']:
            state = dict(packets=self._rewind(), codec=self._codec(),
                         count=0, ended=False)
        self._sequential = state
        codec, count = state['codec'], state['count']
        while len(got) < len(want) and not state['ended']:
            packet = next(state['packets'], None)
            state['ended'] = packet is None
            for frame in codec.decode(packet):
                self.decoded_frames += 1
                if count in want:
                    got[count] = frame.to_ndarray(**convert)
                count += 1
        state['count'] = count
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
