"""What the search reads from the data before it trains anything: the
held-out split that every candidate's J is measured on, the clip-length
limit, and the SHA-256 of the lists (part of the search's fingerprint).

J is measured on a part of the training list held out from training (a
seeded split per class), never on the config's validation or test list:
a network selected on the data it is tested on would report a biased
score.
"""
import hashlib
import os.path as osp
import random
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Tuple

from x3d_plugin.utils.fileio import write_file_atomically


class DataError(ValueError):
    """A list or a video the search cannot use."""


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def read_list(path: str) -> List[str]:
    """The non-empty lines of an annotation list."""
    if not osp.exists(path):
        raise DataError(f'annotation list {path} does not exist; fix the '
                        "config's ann_file or generate the data")
    with open(path, encoding='utf-8') as f:
        return [line.rstrip('\n') for line in f if line.strip()]


def split_held_out(lines: List[str], ratio: float,
                   seed: int) -> Tuple[List[str], List[str]]:
    """Split annotation lines (``path label``) into training and held-out
    lines, per class: ``round(ratio * n)`` of a class's ``n`` lines (at
    least one when ``n >= 2``, never all) chosen with ``seed``; both
    parts keep the list's order.

    Args:
        lines: the training list's lines; the label is the last field.
        ratio: the held-out fraction, in (0, 1).
        seed: the split's seed.
    """
    if not 0 < ratio < 1:
        raise DataError(f'the held-out ratio must be in (0, 1), got {ratio}')
    by_class: Dict[str, List[int]] = defaultdict(list)
    for index, line in enumerate(lines):
        fields = line.rsplit(maxsplit=1)
        if len(fields) != 2:
            raise DataError(f'line {index + 1} of the training list has no '
                            f'label: {line!r}')
        by_class[fields[1]].append(index)
    rng = random.Random(seed)
    held = set()
    for label in sorted(by_class):
        indices = by_class[label]
        count = len(indices)
        take = min(count - 1, max(1 if count >= 2 else 0,
                                  round(ratio * count)))
        held.update(rng.sample(indices, take))
    train = [line for i, line in enumerate(lines) if i not in held]
    held_out = [line for i, line in enumerate(lines) if i in held]
    return train, held_out


def write_lines(path: str, lines: Iterable[str]) -> str:
    """Write ``lines`` to ``path`` (atomically); return the path."""
    write_file_atomically(''.join(f'{line}\n' for line in lines), path)
    return path


def count_frames(path: str) -> int:
    """Frames of a video from its container header (PyAV): the stream's
    frame count, else its duration times its frame rate; decoded only
    when the header has neither."""
    import av
    with av.open(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        if stream.duration and stream.average_rate:
            return int(stream.duration * stream.time_base *
                       stream.average_rate)
        return sum(1 for _ in container.decode(stream))


def shortest_video(paths: List[str], sample: Optional[int] = None,
                   seed: int = 0) -> Tuple[int, int]:
    """Frames of the shortest of ``paths`` (each read from its header) and
    how many were read: all of them, or a seeded random ``sample``.

    Args:
        paths: the training videos.
        sample: read only so many, chosen at random with ``seed``.
        seed: the sample's seed.
    """
    if not paths:
        raise DataError('the training list is empty; set '
                        'expansion.max_clip_span or fix the data')
    if sample is not None and sample < len(paths):
        paths = random.Random(seed).sample(paths, sample)
    import av
    shortest = None
    for path in paths:
        try:
            frames = count_frames(path)
        except (OSError, IndexError, av.error.FFmpegError) as err:
            raise DataError(
                f'cannot read training video {path} to find the clip length '
                f'limit ({err}); fix or drop it, or set '
                'expansion.max_clip_span in the config') from None
        shortest = frames if shortest is None else min(shortest, frames)
    return shortest, len(paths)
