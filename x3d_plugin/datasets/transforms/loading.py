"""Video loading for X3D: decode at the target size, PySlowFast's clip
sampling, and decoding that survives bad videos in training."""
import logging
import os
import os.path as osp
import random
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from mmaction.datasets.transforms import SampleFrames
from mmcv.transforms import BaseTransform

from x3d_plugin.registry import TRANSFORMS
from ..video_io import (VideoDecodeError, error_reason, probe_size,
                        raise_if_environment_error, require, scaled_size)
from .sparse_reader import SparseVideoReader

logger = logging.getLogger('x3d_plugin')

# The file the SkippedVideosHook collects skipped videos from (set by the
# hook in the main process before data-loader workers start).
SKIP_LOG_ENV = 'X3D_PLUGIN_SKIPPED_VIDEOS'


class _SkipOrRaise:
    """Shared handling of a bad video: in training (``on_error='skip'``) log
    it, record it for :class:`SkippedVideosHook` and return None, which makes
    MMEngine's dataset draw another sample (``max_refetch`` bounds the
    retries); otherwise raise an error that names the file.

    An error of the environment (a missing decoder package) is raised in
    both modes: it is not a fact about the video, and skipping would skip
    every video."""

    on_error: str

    def _check_on_error(self, on_error: str) -> None:
        if on_error not in ('skip', 'raise'):
            raise ValueError(
                f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error

    def _fail(self, filename: str, err: Exception) -> None:
        raise_if_environment_error(err)
        reason = error_reason(err)
        if self.on_error == 'raise':
            raise VideoDecodeError(
                f'cannot decode video {filename!r} ({reason}). Remove it from '
                'the annotation list, or re-encode it with '
                'tools/data/reencode_videos.py.') from err
        logger.warning('skipping unreadable video %s (%s)', filename, reason)
        log_file = os.environ.get(SKIP_LOG_ENV)
        if log_file:
            with open(log_file, 'a') as f:
                f.write(f'{filename}\t{reason}\n')
        return None


class _DecodeFrames(_SkipOrRaise, BaseTransform):
    """Shared by the decode transforms: the ``on_error`` argument."""

    def __init__(self, on_error: str = 'raise') -> None:
        self._check_on_error(on_error)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(on_error={self.on_error!r})'


class _InitAtScale(_SkipOrRaise, BaseTransform):
    """Shared by the init transforms: the arguments, the output size and the
    result keys. A subclass opens the file in ``transform`` and hands its
    reader to :meth:`_record`."""

    def __init__(self,
                 short_side: Union[int, Sequence[int], None] = None,
                 num_threads: int = 1,
                 on_error: str = 'raise') -> None:
        if isinstance(short_side, (list, tuple)):
            if len(short_side) != 2 or not 0 < short_side[0] <= short_side[1]:
                raise ValueError(f'short_side range must be (min, max) with '
                                 f'0 < min <= max, got {short_side}')
            short_side = tuple(short_side)
        elif short_side is not None and short_side <= 0:
            raise ValueError(f'short_side must be positive, got {short_side}')
        self.short_side = short_side
        self.num_threads = num_threads
        self._check_on_error(on_error)

    def _output_size(self, height: int, width: int) -> Tuple[int, int]:
        """The size to decode to: the file's, or with the short side at
        ``short_side`` (drawn from the range when it is one)."""
        short_side = self.short_side
        if isinstance(short_side, tuple):
            short_side = random.randint(*short_side)
        if short_side is None:
            return height, width
        return scaled_size(height, width, short_side)

    @staticmethod
    def _record(results: Dict, reader, total: int, fps: float,
                shape: Tuple[int, int], out_shape: Tuple[int, int]) -> Dict:
        (height, width), (out_h, out_w) = shape, out_shape
        results['video_reader'] = reader
        results['total_frames'] = total
        results['avg_fps'] = fps
        results['original_shape'] = (height, width)
        results['img_shape'] = (out_h, out_w)
        results['scale_factor'] = np.array([out_w / width, out_h / height],
                                           dtype=np.float32)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(short_side={self.short_side}, '
                f'num_threads={self.num_threads}, on_error={self.on_error!r})')


@TRANSFORMS.register_module()
class DecordInitAtScale(_InitAtScale):
    """Open a video with decord so that it decodes straight to the size the
    pipeline needs.

    MMAction2's ``DecordInit`` + ``DecordDecode`` + ``Resize`` /
    ``RandomRescale`` decode every frame at full resolution, copy it, and
    then shrink it. Here the decoder itself scales (``VideoReader(width=...,
    height=...)``), so a 1080p clip never exists at 1080p in memory, and the
    file is read from disk by decord directly (MMAction2 reads it into a
    ``BytesIO`` first). The result matches ``DecordDecode`` + ``Resize`` to
    within resampling differences (decord averages like
    ``interpolation='area'`` when it shrinks). The frame size is read from
    the container header with PyAV, so both ``decord`` and ``av`` are
    needed; a missing one is an error in both ``on_error`` modes.

    Arguments and keys are those of :class:`PyAVInitAtScale`; the reader in
    ``video_reader`` is a ``decord.VideoReader``, for
    :class:`RobustDecordDecode`.
    """

    def transform(self, results: Dict) -> Optional[Dict]:
        decord = require('decord')
        filename = results['filename']
        try:
            if not osp.isfile(filename):
                raise FileNotFoundError('no such file')
            height, width = probe_size(filename)
            out_h, out_w = self._output_size(height, width)
            scale = ({} if (out_h, out_w) == (height, width) else dict(
                width=out_w, height=out_h))
            reader = decord.VideoReader(
                filename, num_threads=self.num_threads, **scale)
            total = len(reader)
            if total == 0:
                raise VideoDecodeError('the video has no frames')
        except Exception as err:  # decord raises its own error types
            return self._fail(filename, err)
        results['decord_num_threads'] = self.num_threads
        return self._record(results, reader, total, reader.get_avg_fps(),
                            (height, width), (out_h, out_w))


@TRANSFORMS.register_module()
class RobustDecordDecode(_DecodeFrames):
    """Decode ``frame_inds`` from the reader of :class:`DecordInitAtScale`.

    Unlike MMAction2's ``DecordDecode``, a truncated or corrupt stream does
    not end the epoch: in training the sample is skipped and reported (see
    :class:`DecordInitAtScale`); in testing the error names the file.

    Required keys: ``video_reader``, ``frame_inds``, ``filename``. Added
    keys: ``imgs`` (list of HxWx3 RGB uint8), ``img_shape``.

    Args:
        on_error (str): ``'skip'`` or ``'raise'``. Defaults to ``'raise'``.
    """

    def transform(self, results: Dict) -> Optional[Dict]:
        reader = results.pop('video_reader')
        frame_inds = np.asarray(results['frame_inds']).reshape(-1)
        # Decode each distinct frame once, in file order.
        unique, inverse = np.unique(frame_inds, return_inverse=True)
        try:
            frames = reader.get_batch(unique.tolist()).asnumpy()
        except Exception as err:
            frames = self._decode_full_size_and_resize(results, unique, err)
            if frames is None:
                return self._fail(results['filename'], err)
        finally:
            del reader
        results['imgs'] = list(frames[inverse])
        results['img_shape'] = frames.shape[1:3]
        return results

    @staticmethod
    def _decode_full_size_and_resize(results: Dict, indices: np.ndarray,
                                     err: Exception) -> Optional[np.ndarray]:
        """decord 0.6.0 fails on some output sizes (e.g. 72x54 from 64x48:
        'Check failed: from_size == to_size'); then decode at the file's size
        and resize with OpenCV, as ``Resize`` would. None if that fails too
        or the reader was not scaling."""
        target = tuple(results.get('img_shape', ()))
        if 'from_size == to_size' not in str(err) or target == tuple(
                results.get('original_shape', ())):
            return None
        cv2, decord = require('cv2'), require('decord')
        try:
            reader = decord.VideoReader(
                results['filename'],
                num_threads=results.get('decord_num_threads', 1))
            frames = reader.get_batch(indices.tolist()).asnumpy()
        except Exception as retry_err:
            raise_if_environment_error(retry_err)
            return None
        height, width = target
        # Area averaging when shrinking, as decord's own scaling behaves.
        interpolation = (cv2.INTER_AREA if height < frames.shape[1] else
                         cv2.INTER_LINEAR)
        return np.stack([
            cv2.resize(f, (width, height), interpolation=interpolation)
            for f in frames
        ])


@TRANSFORMS.register_module()
class PyAVInitAtScale(_InitAtScale):
    """Open a video for :class:`PyAVSparseDecode`: read its packet index
    (no decoding) and choose the output size.

    The fast path of the X3D configs. With :class:`PyAVSparseDecode` it
    returns the same frames as ``DecordInit`` + ``DecordDecode`` + ``Resize``
    (FFmpeg decodes both) while decoding only what the clip needs: it starts
    at the keyframe before each needed frame, skips non-reference frames
    that are not needed and scales in the YUV-to-RGB conversion (see
    :mod:`x3d_plugin.datasets.transforms.sparse_reader`). On the real clips
    of ``kinetics_tiny2`` this is about 1.8x decord's decoding speed with
    one thread (``docs/benchmarks.md``).

    Required keys: ``filename``. Added keys: ``video_reader`` (a
    :class:`SparseVideoReader`), ``total_frames``, ``avg_fps``,
    ``original_shape`` (of the file), ``img_shape`` (to decode to),
    ``scale_factor``.

    Args:
        short_side (int | tuple[int, int] | None): Target short side, or a
            ``(min, max)`` range to draw it from uniformly per video (the
            short-side scale jitter of X3D training). None keeps the size.
        num_threads (int): Decoder threads. Defaults to 1.
        on_error (str): ``'skip'`` (training: log, report, draw another
            sample) or ``'raise'`` (testing: a clear error naming the file).
            A missing ``av`` package is an error in both modes. Defaults to
            ``'raise'``.
    """

    def transform(self, results: Dict) -> Optional[Dict]:
        filename = results['filename']
        try:
            reader = SparseVideoReader(filename, num_threads=self.num_threads)
        except Exception as err:  # PyAV raises its own error types
            return self._fail(filename, err)
        shape = (reader.height, reader.width)
        return self._record(results, reader, len(reader), reader.fps, shape,
                            self._output_size(*shape))


@TRANSFORMS.register_module()
class PyAVSparseDecode(_DecodeFrames):
    """Decode ``frame_inds`` at ``img_shape`` from the reader of
    :class:`PyAVInitAtScale`.

    A corrupt or truncated stream is skipped and reported in training and
    named in a clear error in testing, as with :class:`RobustDecordDecode`.

    Required keys: ``video_reader``, ``frame_inds``, ``img_shape``,
    ``filename``. Added keys: ``imgs`` (list of HxWx3 RGB uint8).

    Args:
        on_error (str): ``'skip'`` or ``'raise'``. Defaults to ``'raise'``.
    """

    def transform(self, results: Dict) -> Optional[Dict]:
        reader = results.pop('video_reader')
        try:
            frames = reader.get_batch(
                np.asarray(results['frame_inds']).reshape(-1),
                size=tuple(results['img_shape']))
        except Exception as err:
            return self._fail(results['filename'], err)
        finally:
            reader.close()
        results['imgs'] = list(frames)
        return results


@TRANSFORMS.register_module()
class SlowFastSampleFrames(BaseTransform):
    """Clip sampling exactly as PySlowFast does it for X3D.

    A clip spans ``clip_len * frame_interval`` frames at ``target_fps``
    (PySlowFast ``DATA.NUM_FRAMES``, ``DATA.SAMPLING_RATE``,
    ``DATA.TARGET_FPS = 30``), i.e. ``clip_len * frame_interval / target_fps
    * fps`` frames of the file. Training draws its start uniformly; testing
    places clip ``i`` of ``num_clips`` at ``delta * i / num_clips``
    (``decoder.get_start_end_idx``); ``clip_len`` indices are spread evenly
    over the clip (``torch.linspace``) and clamped to the video (see
    :func:`clip_frame_indices`).

    MMAction2's ``SampleFrames`` differs in test mode (it centres each clip
    in its segment) and in how it resamples to ``target_fps``.

    Required keys: ``total_frames``, ``avg_fps``. Added keys:
    ``frame_inds``, ``clip_len``, ``frame_interval``, ``num_clips``.

    Args:
        clip_len (int): Frames per clip.
        frame_interval (int): Sampling rate at ``target_fps``.
        num_clips (int): Clips per video (testing). Defaults to 1.
        target_fps (float | None): The frame rate that ``frame_interval``
            refers to; None uses the file's own. Defaults to 30.
        test_mode (bool): Evenly placed clips instead of a random one.
            Defaults to False.
    """

    def __init__(self,
                 clip_len: int,
                 frame_interval: int,
                 num_clips: int = 1,
                 target_fps: Optional[float] = 30,
                 test_mode: bool = False) -> None:
        if clip_len <= 0 or frame_interval <= 0 or num_clips <= 0:
            raise ValueError('clip_len, frame_interval and num_clips must be '
                             'positive')
        self.clip_len = clip_len
        self.frame_interval = frame_interval
        self.num_clips = num_clips
        self.target_fps = target_fps
        self.test_mode = test_mode

    def clip_indices(self, total_frames: int, fps: float,
                     clip_idx: Optional[int]) -> np.ndarray:
        """Frame indices of clip ``clip_idx`` (None: a random clip)."""
        delta = max(total_frames - clip_span(self, fps), 0)
        if clip_idx is None:
            start = random.uniform(0, delta)
        else:
            start = delta * clip_idx / self.num_clips
        return clip_frame_indices(self, start, total_frames, fps)

    def transform(self, results: Dict) -> Dict:
        total, fps = results['total_frames'], results.get('avg_fps', 0)
        clips = [
            self.clip_indices(total, fps, i if self.test_mode else None)
            for i in range(self.num_clips)
        ]
        results['frame_inds'] = np.concatenate(clips)
        results['clip_len'] = self.clip_len
        results['frame_interval'] = self.frame_interval
        results['num_clips'] = self.num_clips
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(clip_len={self.clip_len}, '
                f'frame_interval={self.frame_interval}, '
                f'num_clips={self.num_clips}, target_fps={self.target_fps}, '
                f'test_mode={self.test_mode})')


ClipSampler = Union[SlowFastSampleFrames, SampleFrames]


def _check_sampler(sampler: ClipSampler) -> None:
    # Exact types: MMAction2's subclasses of SampleFrames (e.g.
    # DenseSampleFrames) place their frames differently.
    if type(sampler) not in (SlowFastSampleFrames, SampleFrames):
        raise TypeError('expected x3d_plugin.SlowFastSampleFrames or '
                        f"MMAction2's SampleFrames, got {sampler!r}")
    if type(sampler) is SampleFrames and sampler.temporal_jitter:
        raise ValueError('SampleFrames with temporal_jitter=True draws '
                         'random frames; a clip for a given start needs '
                         'temporal_jitter=False')


def clip_span(sampler: ClipSampler, fps: float) -> float:
    """Frames of the file that one clip of ``sampler`` spans, from its
    first frame to one past its last.

    Args:
        sampler (SlowFastSampleFrames | SampleFrames): The frame sampler of
            a pipeline (MMAction2's ``SampleFrames`` with its own defaults:
            ``frame_interval=1``, ``target_fps=None``).
        fps (float): The file's frame rate; 0 if unknown (no resampling).

    Returns:
        float: ``clip_len * frame_interval``, times ``fps / target_fps``
        when the sampler resamples to ``target_fps``; for ``SampleFrames``
        without ``target_fps``, ``(clip_len - 1) * frame_interval + 1``.
    """
    _check_sampler(sampler)
    span = sampler.clip_len * sampler.frame_interval
    if type(sampler) is SlowFastSampleFrames:
        if sampler.target_fps and fps > 0:
            span = span / sampler.target_fps * fps
        return span
    if sampler.target_fps is None:
        return (sampler.clip_len - 1) * sampler.frame_interval + 1
    # SampleFrames._get_ori_clip_len: at least one frame.
    return max(1.0, span * (fps / sampler.target_fps if fps else 1.0))


def clip_frame_indices(sampler: ClipSampler, start: float,
                       total_frames: int, fps: float) -> np.ndarray:
    """Frame indices of the clip of ``sampler`` that starts at frame
    ``start`` of a video of ``total_frames`` frames at ``fps``, as the
    sampler's own ``transform`` computes them for a clip there.

    * :class:`SlowFastSampleFrames`: ``clip_len`` indices spread evenly
      over :func:`clip_span` frames from ``start`` (PySlowFast's
      ``torch.linspace``), clamped to the video.
    * MMAction2's ``SampleFrames``: ``start`` rounded to a whole frame, then
      every ``frame_interval``-th frame; with ``target_fps``, ``clip_len``
      indices spread evenly over its span. Indices past the end wrap
      around (``out_of_bound_opt='loop'``) or repeat the last frame inside
      the video (``'repeat_last'``).

    Args:
        sampler (SlowFastSampleFrames | SampleFrames): The frame sampler.
        start (float): The clip's first frame.
        total_frames (int): Frames of the video.
        fps (float): The video's frame rate; 0 if unknown.

    Returns:
        np.ndarray: ``clip_len`` int64 frame indices.
    """
    span = clip_span(sampler, fps)
    if type(sampler) is SlowFastSampleFrames:
        index = np.linspace(start, start + span - 1, sampler.clip_len)
        return np.clip(index, 0, total_frames - 1).astype(np.int64)
    if sampler.target_fps:
        steps = np.linspace(0, span - 1, sampler.clip_len).astype(np.int64)
    else:
        steps = np.arange(sampler.clip_len) * sampler.frame_interval
    index = int(round(start)) + steps
    inside = index < total_frames
    if sampler.out_of_bound_opt == 'loop':
        index = np.mod(index, total_frames)
    else:  # 'repeat_last'
        index = np.where(inside, index, index[inside].max(initial=0))
    return index.astype(np.int64)
