"""The demo dataset: eight compass-direction motions as real videos in
MMAction2's VideoDataset layout."""
import numpy as np
import pytest

from x3d_plugin.datasets.demo_data import (CLASSES, generate, render_video,
                                           write_video)
from x3d_plugin.datasets.transforms import SparseVideoReader


def centroid(frame):
    """(x, y) of the bright shape: its pixels are far above the dark
    background."""
    ys, xs = np.nonzero(frame.max(-1) > 120)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize('label', range(len(CLASSES)))
def test_shape_moves_in_the_class_direction(label):
    frames = render_video(label, np.random.default_rng([7, label]), 16)
    assert frames.shape == (16, 48, 64, 3) and frames.dtype == np.uint8
    dx, dy = centroid(frames[-1]) - centroid(frames[0])
    assert np.hypot(dx, dy) > 10  # at least 1 pixel a frame
    # Image y points down; class k moves at k * 45 degrees.
    angle = np.degrees(np.arctan2(-dy, dx)) % 360
    error = (angle - label * 45 + 180) % 360 - 180
    assert abs(error) < 15, (CLASSES[label], angle)


@pytest.mark.parametrize('label', [0, 3, 6])
def test_wrapped_video_keeps_one_direction_for_any_length(label):
    # 120 frames move the shape 120-190 pixels: past the frame's edges.
    frames = render_video(label, np.random.default_rng([8, label]), 120,
                          wrap=True)
    assert frames.shape == (120, 48, 64, 3)
    bright = frames.max(-1) > 120
    area = bright.sum((1, 2))
    # The shape is whole in every frame (split across edges while it
    # crosses them): its area varies only with the spin and antialiasing.
    assert area.min() > 0.5 * np.median(area)
    # The shape's centre on the torus (circular mean of its pixels'
    # coordinates) moves one way at 1-1.6 pixels a frame, across edges too.
    extent = np.array([64, 48])
    centres = []
    for frame in frames:
        ys, xs = np.nonzero(frame.max(-1) > 120)
        phase = np.stack([xs, ys], 1) * 2 * np.pi / extent
        centres.append(np.angle(np.exp(1j * phase).mean(0)) * extent /
                       (2 * np.pi))
    steps = (np.diff(centres, axis=0) + extent / 2) % extent - extent / 2
    dx, dy = np.mean(steps, 0)
    assert 0.9 < np.hypot(dx, dy) < 1.7
    angle = np.degrees(np.arctan2(-dy, dx)) % 360
    assert abs((angle - label * 45 + 180) % 360 - 180) < 10, angle


def test_unwrapped_videos_do_not_change_with_the_wrap_option():
    a = render_video(5, np.random.default_rng([1, 5]), 16)
    b = render_video(5, np.random.default_rng([1, 5]), 16, wrap=False)
    assert np.array_equal(a, b)


def test_generate_writes_lists_videos_and_label_map(tmp_path):
    lists = generate(tmp_path, train_per_class=1, val_per_class=1, frames=6,
                     long_per_class=1, long_frames=9)
    assert set(lists) == {'train', 'val', 'long'}
    assert (tmp_path / 'label_map.txt').read_text().splitlines() == list(
        CLASSES)
    for split, list_file in lists.items():
        lines = list_file.read_text().splitlines()
        assert sorted(int(line.split()[1]) for line in lines) == list(
            range(8))
        for line in lines:
            rel, label = line.split()
            assert rel == f'videos/{split}/{split}_{label}_0000.mp4'
            with SparseVideoReader(str(tmp_path / rel)) as reader:
                length = 9 if split == 'long' else 6
                assert (len(reader), reader.height,
                        reader.width) == (length, 48, 64)
                assert reader.fps == pytest.approx(12)


def test_write_video_round_trip(tmp_path):
    frames = render_video(2, np.random.default_rng(0), 8)
    write_video(tmp_path / 'up.mp4', frames, fps=8)
    with SparseVideoReader(str(tmp_path / 'up.mp4')) as reader:
        assert (len(reader), reader.fps) == (8, 8)
        decoded = reader.get_batch(range(8)).astype(float)
    # crf 18 on a noisy picture: measured 3.2 from the rendered frames, 6.0
    # from the next ones.
    same = np.abs(decoded - frames).mean()
    assert same < 4
    assert np.abs(decoded[:-1] - frames[1:]).mean() > 1.5 * same
