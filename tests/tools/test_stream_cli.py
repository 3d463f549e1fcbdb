"""tools/stream.py end to end: a generated video pushed through a pipe at
real time into the tool's stdin; JSON lines, the final report and an
annotated MP4 come out."""
import json
import subprocess
import sys

import av
import pytest
import torch
from mmengine.config import Config

from conftest import ROOT
from utils_helpers import smooth_frames
from x3d_plugin.apis import init_recognizer
from x3d_plugin.datasets.demo_data import write_video

TEST_PIPELINE = """
test_pipeline = [
    dict(type='x3d_plugin.PyAVInitAtScale', short_side=32),
    dict(type='x3d_plugin.SlowFastSampleFrames', clip_len=8, frame_interval=2,
         num_clips=2, target_fps=None, test_mode=True),
    dict(type='x3d_plugin.PyAVSparseDecode'),
    dict(type='ThreeCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
"""


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('stream_cli')
    video = tmp / 'waves.mp4'
    write_video(video, smooth_frames(48, 48, 64), fps=12)
    config = tmp / 'x3d_xs_tiny.py'
    config.write_text(f"_base_ = ['{ROOT / 'configs' / 'x3d_xs_demo.py'}']\n"
                      + TEST_PIPELINE)
    labels = tmp / 'labels.txt'
    labels.write_text(''.join(f'class {i}\n' for i in range(8)))
    model = init_recognizer(Config.fromfile(str(config)))
    checkpoint = tmp / 'random.pth'
    torch.save(model.state_dict(), checkpoint)
    return tmp, video, config, checkpoint, labels


def test_pipe_at_real_time(setup):
    tmp, video, config, checkpoint, labels = setup
    out, annotated = tmp / 'preds.jsonl', tmp / 'annotated.mp4'
    pusher = subprocess.Popen(
        [sys.executable, str(ROOT / 'tests' / 'apis' / 'stream_source.py'),
         str(video), '-', '--realtime'], stdout=subprocess.PIPE)
    tool = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'stream.py'), str(config),
         str(checkpoint), '-', '--every', '4', '--label-map', str(labels),
         '--out', str(out), '--annotate', str(annotated), '--topk', '3'],
        stdin=pusher.stdout, capture_output=True, text=True, timeout=120)
    pusher.stdout.close()
    pusher.wait(timeout=30)
    assert tool.returncode == 0, tool.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) >= 1
    frames = [line['frame'] for line in lines]
    assert frames == sorted(frames) and frames[-1] <= 47
    for line in lines:
        assert [t['label'] for t in line['topk']] == [
            f"class {t['index']}" for t in line['topk']]
        scores = [t['score'] for t in line['topk']]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
        assert line['latency'] >= 0
    err = tool.stderr.strip().splitlines()
    assert err[-3] == 'stream ended: stdin after 48 frames'
    assert err[-2].startswith(f'48 frames, {len(lines)} predictions (')
    assert 'latency p50' in err[-2] and 'skipped windows' in err[-2]
    with av.open(str(annotated)) as container:
        shown = sum(1 for _ in container.decode(video=0))
    dropped = int(err[-2].split(' skipped windows, ')[1].split()[0])
    assert shown == 48 - dropped


def test_missing_checkpoint_is_named(setup, tmp_path):
    _, video, config, _, _ = setup
    tool = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'stream.py'), str(config),
         str(tmp_path / 'none.pth'), str(video)],
        capture_output=True, text=True, timeout=120)
    assert tool.returncode == 1
    assert 'none.pth' in tool.stderr and tool.stderr.startswith('error: ')


def test_stall_is_named_and_predictions_kept(setup):
    """A pipe that stops sending (but stays open) after 40 packets: the
    tool names the stall in one line, exits with 2, and the JSON lines
    written before it are complete."""
    tmp, video, config, checkpoint, _ = setup
    out = tmp / 'stalled.jsonl'
    pusher = subprocess.Popen(
        [sys.executable, str(ROOT / 'tests' / 'apis' / 'stream_source.py'),
         str(video), '-', '--stall-after', '40'], stdout=subprocess.PIPE)
    try:
        tool = subprocess.run(
            [sys.executable, str(ROOT / 'tools' / 'stream.py'), str(config),
             str(checkpoint), '-', '--every', '4', '--out', str(out),
             '--stall-timeout', '2', '--no-progress'],
            stdin=pusher.stdout, capture_output=True, text=True, timeout=120)
    finally:
        pusher.kill()
        pusher.wait()
    assert tool.returncode == 2, tool.stderr
    err = tool.stderr.strip().splitlines()
    assert err[-2].startswith('stream stalled: no frame for 2 s from stdin '
                              'after ')
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) >= 1
    assert err[-1].startswith(f'{err[-2].split(" after ")[1].split()[0]} '
                              f'frames, {len(lines)} predictions (')
