"""Write the embedded demo dataset: short real H.264 videos of synthetic
actions that no single frame can tell apart.

Eight classes: a bright random shape on a dark noisy background moving in
one of eight compass directions (right, up-right, up, ... down-right).
Shape, colours, size, start position and angle, speed, a slow spin and the
noise are random, so only the motion across frames tells the class.

Net motion in one direction survives X3D's global pooling, so X3D-XS
learns these classes within the demo's 10-minute budget. Flipping changes
the direction, so the demo config does not flip.

Output (MMAction2 ``VideoDataset`` layout)::

    ROOT/videos/{train,val}/*.mp4
    ROOT/{train,val}_list_videos.txt   "videos/train/x.mp4 label" per line
    ROOT/videos/long/*.mp4, ROOT/long_list_videos.txt   (only if asked for)
    ROOT/label_map.txt                 one class name per line

The command line is ``tools/data/generate_demo_dataset.py``.
"""
from pathlib import Path

import numpy as np

from .video_io import require

# Compass directions of motion, 45 degrees apart; image y points down.
CLASSES = ('moving right', 'moving up-right', 'moving up', 'moving up-left',
           'moving left', 'moving down-left', 'moving down',
           'moving down-right')


def _polygon(rng):
    """A random star-like polygon around 0 with one clear tip."""
    n = rng.integers(3, 6)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.35, 0.8, n)
    radii[0] = 1.0
    return np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)


def render_video(label, rng, num_frames=16, height=48, width=64,
                 wrap=False):
    """Frames (T, H, W, 3) uint8 of one video of class ``label``: a bright
    random shape on a dark, noisy background moving in the class's compass
    direction (``CLASSES``), with random speed, start, size and spin.

    The path stays inside the frame, so a video is as long as the frame
    allows (about 30 frames). ``wrap=True`` makes the frame a torus for
    longer videos: a shape leaving one edge enters at the opposite one,
    drawn on both sides while it crosses, so the motion stays one
    direction at the same speed for any length."""
    cv2 = require('cv2')
    background = rng.uniform(0, 60, 3)
    color = rng.uniform(150, 255, 3)
    polygon = _polygon(rng)
    size = rng.uniform(8, 12)  # radius in pixels
    speed = rng.uniform(1.0, 1.6)  # pixels per frame
    spin = np.deg2rad(rng.uniform(-3.0, 3.0))  # per frame, either way
    noise = rng.uniform(2, 8)
    angle0 = rng.uniform(0, 2 * np.pi)
    heading = label * np.pi / 4
    direction = np.array([np.cos(heading), -np.sin(heading)])
    extent = np.array([width, height])
    travel = speed * (num_frames - 1)
    # Start so that the whole path stays inside the frame.
    margin = size + 1
    low = margin + np.maximum(-direction * travel, 0)
    high = extent - margin - np.maximum(direction * travel, 0)
    if wrap:
        start = rng.uniform(np.zeros(2), extent)
    else:
        start = rng.uniform(low, np.maximum(high, low + 1))
    # Copies one frame width or height away draw the part of a wrapped
    # shape that has crossed an edge.
    shifts = ([(dx, dy) for dx in (-width, 0, width)
               for dy in (-height, 0, height)] if wrap else [(0, 0)])
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        center = start + direction * speed * t
        if wrap:
            center = np.mod(center, extent)
        angle = angle0 + spin * t
        rot = np.array([[np.cos(angle), -np.sin(angle)],
                        [np.sin(angle), np.cos(angle)]])
        points = (polygon @ rot.T) * size + center
        frame = np.empty((height, width, 3))
        frame[:] = background
        for shift in shifts:
            cv2.fillPoly(frame,
                         [np.round((points + shift) * 16).astype(np.int32)],
                         color.tolist(), lineType=cv2.LINE_AA, shift=4)
        frame += rng.normal(0, noise, frame.shape)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def write_video(path, frames, fps=12, options=None):
    """Encode frames (T, H, W, 3 RGB uint8) as H.264 .mp4 with PyAV;
    ``options`` (libx264's, e.g. ``{'g': '30', 'bf': '3'}``) are added to
    the defaults."""
    av = require('av')
    with av.open(str(path), mode='w') as container:
        stream = container.add_stream('libx264', rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = 'yuv420p'
        stream.options = {'crf': '18', 'preset': 'veryfast', **(options or {})}
        for frame in frames:
            for packet in stream.encode(
                    av.VideoFrame.from_ndarray(frame, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def generate(root, train_per_class=100, val_per_class=16, seed=0, frames=16,
             long_per_class=0, long_frames=400):
    """Write the dataset under ``root`` and return the list files.

    ``long_per_class`` > 0 adds the ``long`` split: videos of
    ``long_frames`` frames drawn with ``wrap=True`` (see
    :func:`render_video`), for testing models on streams longer than a
    clip, e.g. continual inference after its warm-up."""
    root = Path(root)
    lists = {}
    splits = [('train', train_per_class, 0, frames, False),
              ('val', val_per_class, 1, frames, False)]
    if long_per_class > 0:
        splits.append(('long', long_per_class, 2, long_frames, True))
    for split, count, offset, num_frames, wrap in splits:
        folder = root / 'videos' / split
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for label in range(len(CLASSES)):
            for i in range(count):
                rng = np.random.default_rng([seed, offset, label, i])
                name = f'{split}_{label}_{i:04d}.mp4'
                write_video(folder / name,
                            render_video(label, rng, num_frames, wrap=wrap))
                lines.append(f'videos/{split}/{name} {label}')
        order = np.random.default_rng([seed, offset]).permutation(len(lines))
        list_file = root / f'{split}_list_videos.txt'
        list_file.write_text('\n'.join(lines[i] for i in order) + '\n')
        lists[split] = list_file
    (root / 'label_map.txt').write_text('\n'.join(CLASSES) + '\n')
    return lists
