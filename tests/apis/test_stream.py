"""StreamClassifier on real streams made here: a file, a pipe fed at real
time, an HTTP loopback stream, a slow model, a stall and a damaged stream.

The video has 48 frames at 12 fps (4 s); the model is X3D-XS of the demo
config with random weights at a 32-pixel short side and crop."""
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config

from conftest import ROOT
from utils_helpers import smooth_frames
from x3d_plugin.apis import init_recognizer, predict_timeline
from x3d_plugin.apis.stream import (ClipSpec, StreamClassifier, StreamError,
                                    stream_predictions)
from x3d_plugin.datasets.demo_data import write_video
from x3d_plugin.datasets.transforms import clip_frame_indices

FPS, FRAMES = 12, 48
SOURCE = str(Path(__file__).with_name('stream_source.py'))


@pytest.fixture(scope='module')
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp('stream') / 'waves.mp4'
    write_video(path, smooth_frames(FRAMES, 48, 64), fps=FPS)
    return str(path)


def tiny_model(clip_len=8, frame_interval=2, target_fps=None):
    cfg = Config.fromfile(str(ROOT / 'configs' / 'x3d_xs_demo.py'))
    cfg.test_pipeline = [
        dict(type='x3d_plugin.PyAVInitAtScale', short_side=32),
        dict(type='x3d_plugin.SlowFastSampleFrames', clip_len=clip_len,
             frame_interval=frame_interval, num_clips=2,
             target_fps=target_fps, test_mode=True),
        dict(type='x3d_plugin.PyAVSparseDecode'),
        dict(type='ThreeCrop', crop_size=32),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs')
    ]
    return init_recognizer(cfg)


@pytest.fixture(scope='module')
def model():
    return tiny_model()


def push(video, out='-', *args):
    return subprocess.Popen(
        [sys.executable, SOURCE, video, out, *args],
        stdout=subprocess.PIPE if out == '-' else subprocess.DEVNULL)


def assert_equal_to_timeline(model, video, preds):
    """Each prediction is the timeline's window of the same frames, with
    the same scores."""
    windows = predict_timeline(model, video, progress=False)
    sampler = ClipSpec(model.cfg.test_pipeline).sampler
    assert len(preds) == len(windows)
    for pred, window in zip(preds, windows):
        expected = clip_frame_indices(sampler, window['start'] * FPS,
                                      FRAMES, FPS)
        np.testing.assert_array_equal(pred.frame_inds, expected)
        assert pred.start_time == pytest.approx(window['start'])
        np.testing.assert_allclose(pred.scores, window['scores'], rtol=0,
                                   atol=1e-5)


def test_file_windows_equal_timeline(model, video):
    preds = stream_predictions(model, video)
    report = preds.report
    assert report.end == 'ended'
    assert report.message == f'stream ended: {video} after 48 frames'
    # 16-frame windows touching: ending at frames 15, 31, 47.
    assert [p.frame for p in preds] == [15, 31, 47]
    assert (report.windows, report.skipped_windows,
            report.dropped_frames) == (3, 0, 0)
    assert_equal_to_timeline(model, video, preds)


def test_resampled_windows_equal_timeline(video):
    """target_fps=24 on a 12 fps source: 4 frames every 4th at 24 fps span
    8 source frames, resampled as the offline sampler resamples."""
    model = tiny_model(clip_len=4, frame_interval=4, target_fps=24)
    preds = stream_predictions(model, video)
    assert [p.frame for p in preds] == [7, 15, 23, 31, 39, 47]
    np.testing.assert_array_equal(preds[1].frame_inds, [8, 10, 12, 15])
    assert_equal_to_timeline(model, video, preds)


def test_every_places_windows(model, video):
    preds = stream_predictions(model, video, every=5)
    assert [p.frame for p in preds] == list(range(15, 48, 5))
    np.testing.assert_array_equal(preds[1].frame_inds,
                                  [5, 7, 9, 11, 13, 15, 17, 20])


def test_pipe_at_real_time_equals_timeline(model, video):
    """A subprocess remuxes the video to MPEG-TS on a pipe at 12 fps."""
    proc = push(video, '-', '--realtime')
    try:
        preds = stream_predictions(model, proc.stdout, stall_timeout=10)
    finally:
        proc.wait(timeout=30)
    report = preds.report
    assert report.end == 'ended', report.message
    assert report.frames == FRAMES
    assert report.dropped_frames == 0
    assert report.skipped_windows == 0
    assert len(report.latencies) == len(preds) == 3
    assert_equal_to_timeline(model, video, preds)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_tcp_loopback_equals_timeline(model, video):
    """A TCP server on 127.0.0.1 serves the stream at 12 fps; the client
    may connect before it listens (refused, then reconnected)."""
    port = free_port()
    proc = push(video, f'tcp://127.0.0.1:{port}?listen=1', '--realtime')
    try:
        preds = stream_predictions(model, f'tcp://127.0.0.1:{port}',
                                   reconnect=3, stall_timeout=5)
    finally:
        proc.wait(timeout=30)
    assert preds.report.end == 'ended', preds.report.message
    assert preds.report.frames == FRAMES
    assert_equal_to_timeline(model, video, preds)


def test_http_loopback_equals_timeline(model, video):
    """An HTTP server on 127.0.0.1 serves the stream at 12 fps to one
    client."""
    url = f'http://127.0.0.1:{free_port()}/live.ts'
    proc = push(video, url, '--realtime', '--listen')
    try:
        preds = stream_predictions(model, url, reconnect=3, stall_timeout=5)
    finally:
        proc.wait(timeout=30)
    assert preds.report.end == 'ended', preds.report.message
    assert preds.report.frames == FRAMES
    assert preds.report.dropped_frames == 0
    assert_equal_to_timeline(model, video, preds)


def test_reconnect_after_the_stream_ends(model, video):
    """The HTTP server serves the stream twice; with reconnect the client
    opens it again after the first ends and classifies both."""
    url = f'http://127.0.0.1:{free_port()}/live.ts'
    proc = push(video, url, '--realtime', '--listen', '--clients', '2')
    try:
        preds = stream_predictions(model, url, reconnect=4, stall_timeout=5)
    finally:
        proc.wait(timeout=30)
    report = preds.report
    assert report.frames == 2 * FRAMES, report
    assert report.reconnects >= 1
    # Each opening starts its own windows: 15, 31, 47 twice.
    assert [p.frame for p in preds] == [15, 31, 47] * 2
    np.testing.assert_allclose(preds[3].scores, preds[0].scores, atol=1e-6)


def test_udp_loopback(model, video):
    """MPEG-TS over UDP: the client joins whenever the sender starts; the
    stream is classified and ends by stalling when the sender stops."""
    port = free_port()
    proc = push(video, f'udp://127.0.0.1:{port}?pkt_size=1316',
                '--realtime', '--repeat', '2')
    try:
        preds = stream_predictions(model, f'udp://127.0.0.1:{port}',
                                   stall_timeout=2, every=8)
    finally:
        proc.kill()
        proc.wait()
    report = preds.report
    assert report.end == 'stalled'
    assert report.message.startswith('stream stalled: no frame for 2 s from '
                                     f'udp://127.0.0.1:{port} after ')
    assert report.frames >= 24 and len(preds) >= 2
    for pred in preds:
        assert len(pred.topk) == 5 and pred.scores.shape == (8, )


def test_slow_model_skips_windows_and_keeps_up(model, video):
    """A model 3x slower than the windows come (one every frame at 12 fps):
    older windows are skipped and counted, the newest is predicted, and no
    frame is lost."""
    calls = []
    scores = StreamClassifier(model)._model_scores

    def slow(batch):
        calls.append(1)
        time.sleep(0.25)
        return scores(batch)

    preds = stream_predictions(model, video, every=1, realtime=True,
                               predict=slow)
    report = preds.report
    assert report.windows == FRAMES - 15
    assert report.skipped_windows > 0
    assert report.predictions + report.skipped_windows == report.windows
    assert len(calls) == len(preds) == report.predictions
    assert report.dropped_frames == 0
    assert preds[-1].frame == FRAMES - 1  # the newest window wins
    frames = [p.frame for p in preds]
    assert frames == sorted(frames)
    assert max(np.diff(frames)) > 1


def test_stall_keeps_earlier_predictions(model, video):
    proc = push(video, '-', '--realtime', '--stall-after', '40')
    try:
        preds = stream_predictions(model, proc.stdout, stall_timeout=1.5,
                                   every=4)
    finally:
        proc.kill()
        proc.wait()
    report = preds.report
    assert report.end == 'stalled'
    assert report.message.startswith(
        'stream stalled: no frame for 1.5 s from ')
    assert '\n' not in report.message
    assert 16 <= report.frames < FRAMES
    assert report.dropped_frames == 0
    assert len(preds) >= 1
    assert_equal_to_timeline_prefix(model, video, preds)


def assert_equal_to_timeline_prefix(model, video, preds):
    """Predictions before a stall or damage equal the scores of the same
    frames read from the file."""
    file_preds = {p.frame: p for p in stream_predictions(model, video,
                                                         every=4)}
    for pred in preds[:1]:
        np.testing.assert_allclose(pred.scores,
                                   file_preds[pred.frame].scores, atol=1e-5)


def mpegts_bytes(video):
    out = subprocess.run([sys.executable, SOURCE, video, '-'],
                         stdout=subprocess.PIPE, check=True).stdout
    return out


def test_truncated_and_corrupt_stream(model, video, tmp_path):
    data = bytearray(mpegts_bytes(video))
    # Garbage over a stretch in the middle, and the tail cut off mid-packet.
    rng = np.random.default_rng(0)
    middle = len(data) // 2
    data[middle:middle + 3000] = rng.integers(0, 256, 3000,
                                              dtype=np.uint8).tobytes()
    data = data[:len(data) * 3 // 4 + 101]
    damaged = tmp_path / 'damaged.ts'
    damaged.write_bytes(bytes(data))
    preds = stream_predictions(model, str(damaged), every=4,
                               stall_timeout=5)
    report = preds.report
    assert report.end in ('ended', 'broke')
    assert report.message.startswith(('stream ended: ', 'stream broke: '))
    assert '\n' not in report.message
    assert 16 <= report.frames < FRAMES
    assert len(preds) >= 1
    assert_equal_to_timeline_prefix(model, video, preds)


def test_missing_source_is_named(model, tmp_path):
    with pytest.raises(StreamError, match='cannot open .*nowhere.mp4'):
        stream_predictions(model, str(tmp_path / 'nowhere.mp4'))


def test_missing_protocol_names_the_pipe_fix(model):
    with pytest.raises(StreamError, match=r'nosuch://.*Protocol not found.*'
                       r'lacks the protocol.*-f mpegts -'):
        stream_predictions(model, 'nosuch://127.0.0.1:9')


def test_model_error_is_raised_not_hung(model, video):
    """An error in the model thread ends the run and is raised (a file's
    reader, which waits for the model, is released)."""

    def broken(batch):
        raise RuntimeError('engine failed')

    with pytest.raises(RuntimeError, match='engine failed'):
        stream_predictions(model, video, every=1, predict=broken)


def test_bad_arguments(model):
    with pytest.raises(StreamError, match='every must be at least 1'):
        stream_predictions(model, '-', every=0)


def test_an_exported_engine_streams_the_same_scores(model, video, tmp_path):
    """`tools/stream.py --engine`: the recognizer on OpenVINO (the
    checkpoint converted in memory) gives the PyTorch stream's scores."""
    pytest.importorskip('openvino', reason='the deploy extra is not installed')
    import torch
    checkpoint = tmp_path / 'random.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    on_engine = init_recognizer(model.cfg, str(checkpoint), engine='openvino')
    ours = stream_predictions(on_engine, video)
    theirs = stream_predictions(model, video)
    assert len(ours) == len(theirs) >= 2
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.frame_inds, b.frame_inds)
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)
