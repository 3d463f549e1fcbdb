"""Re-encode videos for fast training reads (the command line is
``tools/data/reencode_videos.py``).

Kinetics clips come at up to 1080p with keyframes several seconds apart;
X3D trains on a 256-320 short side and reads 16 frames at a random point.
Re-encoding once to a small short side and a short keyframe interval makes
every later read decode few, small frames. Encoding uses PyAV's bundled
FFmpeg (libx264), so no system ffmpeg is needed.
"""
import os.path as osp
from typing import Dict, Optional

from x3d_plugin.utils.fileio import atomic_path
from .video_io import (VideoDecodeError, error_reason, first_video_stream,
                       raise_if_environment_error, require, scaled_size)

VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi', '.mov', '.m4v', '.flv',
                    '.mpg', '.mpeg', '.wmv', '.3gp')


def output_size(height: int, width: int, short_side: int):
    """(height, width) with the short side at ``short_side`` (never
    enlarged; 0 keeps the size), both even as yuv420p requires."""
    if short_side and min(height, width) > short_side:
        height, width = scaled_size(height, width, short_side)
    return height - height % 2, width - width % 2


def reencode_video(src: str,
                   dst: str,
                   short_side: int = 320,
                   keyint: int = 16,
                   crf: int = 23,
                   preset: str = 'veryfast',
                   threads: int = 1) -> Dict:
    """Write ``src`` as H.264 MP4 at ``dst``: short side ``short_side``,
    a keyframe every ``keyint`` frames, same frame rate and timestamps, no
    audio. The file appears at ``dst`` only when complete (written to a
    temporary file beside it and renamed,
    :func:`~x3d_plugin.utils.fileio.atomic_path`), so an interrupted run
    leaves no half-written video behind.

    Returns ``dict(frames=..., height=..., width=...)`` of the output.
    """
    av = require('av')
    frames = 0
    with atomic_path(dst) as part, av.open(src) as source:
        in_stream = first_video_stream(source)
        in_stream.thread_type = 'AUTO'
        in_stream.thread_count = threads
        height, width = output_size(in_stream.height, in_stream.width,
                                    short_side)
        rate = in_stream.average_rate or in_stream.guessed_rate or 30
        with av.open(part, mode='w', format='mp4') as target:
            out = target.add_stream('libx264', rate=rate)
            out.width, out.height, out.pix_fmt = width, height, 'yuv420p'
            # Keep the source's clock, in the encoder too (at 1/fps
            # two close timestamps of a variable-rate file would merge).
            out.time_base = in_stream.time_base
            out.codec_context.time_base = in_stream.time_base
            out.options = {
                'crf': str(crf),
                'preset': preset,
                'g': str(keyint),
                'keyint_min': str(keyint),
                'sc_threshold': '0',  # keyframes exactly every keyint
                'threads': str(threads),
            }
            last_pts = None
            for frame in source.decode(in_stream):
                image = frame.reformat(
                    width=width,
                    height=height,
                    format='yuv420p',
                    interpolation='AREA')
                pts = frame.pts
                if pts is None or (last_pts is not None
                                   and pts <= last_pts):
                    # Missing or repeated timestamps: number the frames.
                    pts = 0 if last_pts is None else last_pts + 1
                image.pts, image.time_base = pts, in_stream.time_base
                # Keyframes follow keyint, not the source's frame types.
                image.pict_type = av.video.frame.PictureType.NONE
                last_pts = pts
                for packet in out.encode(image):
                    target.mux(packet)
                frames += 1
            for packet in out.encode():
                target.mux(packet)
        if frames == 0:
            raise VideoDecodeError('no frame could be decoded')
    return dict(frames=frames, height=height, width=width)


def reencoded_name(relpath: str) -> str:
    """The output's path for a video at ``relpath``: same folders and
    name, ``.mp4`` extension."""
    return osp.splitext(relpath)[0] + '.mp4'


def reencode_job(job) -> Dict:
    """One unit of work for a process pool: a video that fails is reported
    in the result (``ok=False``, ``error``), not raised; an error of the
    environment (a missing package) is raised, as every video would fail
    alike."""
    src, dst, options = job
    try:
        info = reencode_video(src, dst, **options)
        return dict(src=src, dst=dst, ok=True, **info)
    except Exception as err:  # report and go on with the other files
        raise_if_environment_error(err)
        return dict(src=src, dst=dst, ok=False, error=error_reason(err))


def describe(path: str) -> Optional[Dict]:
    """Short side, frame count and keyframe interval of a video (for
    reports and tests); None if it cannot be read."""
    av = require('av')
    try:
        with av.open(path) as container:
            stream = first_video_stream(container)
            keys, count = [], 0
            for packet in container.demux(stream):
                if packet.size:
                    if packet.is_keyframe:
                        keys.append(count)
                    count += 1
        gaps = [b - a for a, b in zip(keys, keys[1:])]
        return dict(
            height=stream.height,
            width=stream.width,
            frames=count,
            max_keyframe_gap=max(gaps) if gaps else count)
    except Exception:
        return None
