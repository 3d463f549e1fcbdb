"""Videos that are not what their name says: broken ones are skipped in
training (and named once each), odd but valid ones decode, and a broken one
in testing is one error line naming it."""
import importlib.util
import os
import struct
import textwrap
from fractions import Fraction

import av
import numpy as np
import pytest

from conftest import ROOT
from x3d_plugin.datasets import CheckedVideoDataset
from x3d_plugin.datasets.demo_data import generate, render_video, write_video
from x3d_plugin.datasets.transforms.loading import SKIP_LOG_ENV


def good_video(path, frames=16, seed=0):
    write_video(path, render_video(1, np.random.default_rng(seed), frames))
    return path


def make_hostile(folder):
    """The broken files, by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    good = good_video(folder / 'source.mp4').read_bytes()
    files = {
        'truncated': good[:len(good) // 3],
        'zero bytes': b'',
        'random bytes': np.random.default_rng(0).bytes(20000),
        'text renamed': b'This is a README, not a video.\n' * 50,
        # The ftyp box and the start of the next: a container, no frames.
        'header only': good[:64],
    }
    paths = {}
    for kind, data in files.items():
        paths[kind] = folder / (kind.replace(' ', '_') + '.mp4')
        paths[kind].write_bytes(data)
    paths['audio only'] = folder / 'audio_only.mp4'
    with av.open(str(paths['audio only']), 'w') as out:
        stream = out.add_stream('aac', rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32),
                                               format='fltp',
                                               layout='mono')
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    (folder / 'source.mp4').unlink()
    return paths


def _encode(path, frames, pix_fmt='yuv420p', pts=None):
    with av.open(str(path), 'w') as out:
        stream = out.add_stream('libx264', rate=12)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format='rgb24')
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _rotate_90(path):
    """Set the video track's tkhd matrix to a 90 degree rotation (what a
    phone writes), leaving the coded frames as they are."""
    data = bytearray(path.read_bytes())
    at = data.index(b'tkhd')
    version = data[at + 4]
    # After version/flags: times, track id, durations (v0: 32-bit, v1:
    # 64-bit), reserved, layer, group, volume, reserved.
    matrix = at + 4 + 4 + (20 if version == 0 else 32) + 8 + 8
    data[matrix:matrix + 36] = struct.pack('>9i', 0, 0x10000, 0, -0x10000, 0,
                                           0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def make_odd(folder):
    """Valid but unusual videos, by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = render_video(3, np.random.default_rng(1), 16)
    return {
        'one frame':
        _encode(folder / 'one_frame.mp4', frames[:1]),
        '1x1':
        _encode(folder / 'tiny.mp4',
                np.repeat(np.repeat(frames[:, :1, :1], 1, 1), 1, 2),
                pix_fmt='yuv444p'),
        'variable frame rate':
        _encode(folder / 'vfr.mp4',
                frames,
                pts=np.cumsum([
                    0, 40, 90, 40, 200, 40, 40, 300, 40, 40, 40, 80, 40, 40,
                    40, 40
                ]).tolist()),
        'rotated 90':
        _rotate_90(_encode(folder / 'rotated.mp4', frames)),
    }


def pipeline(on_error, test_mode=False):
    return [
        dict(type='x3d_plugin.PyAVInitAtScale',
             short_side=32,
             on_error=on_error),
        dict(type='x3d_plugin.SlowFastSampleFrames',
             clip_len=4,
             frame_interval=2,
             target_fps=None,
             test_mode=test_mode),
        dict(type='x3d_plugin.PyAVSparseDecode', on_error=on_error),
        dict(type='CenterCrop', crop_size=32),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs')
    ]


def dataset_of(folder, names, on_error, test_mode=False):
    ann = folder / 'list.txt'
    ann.write_text(''.join(f'{n} 0\n' for n in names))
    return CheckedVideoDataset(ann_file=str(ann),
                               data_prefix=dict(video=str(folder)),
                               num_classes=2,
                               pipeline=pipeline(on_error, test_mode),
                               test_mode=test_mode)


def test_broken_videos_are_skipped_in_training(tmp_path, monkeypatch):
    paths = make_hostile(tmp_path)
    good_video(tmp_path / 'good.mp4')
    log = tmp_path / 'skipped.tsv'
    monkeypatch.setenv(SKIP_LOG_ENV, str(log))
    names = [p.name for p in paths.values()]
    dataset = dataset_of(tmp_path, names + ['good.mp4'], 'skip')
    for i in range(len(names)):
        item = dataset[i]  # another sample drawn in its place: the good one
        assert tuple(item['inputs'].shape) == (1, 3, 4, 32, 32)
    # Each skip is logged with its reason (a replacement drawn at random
    # may be a broken one again, so a file can be there more than once).
    skipped = [line.split('\t') for line in log.read_text().splitlines()]
    assert {os.path.basename(f) for f, _ in skipped} == set(names)
    assert all(reason.strip() for _, reason in skipped)


@pytest.mark.parametrize(
    'kind', ['one frame', '1x1', 'variable frame rate', 'rotated 90'])
def test_odd_but_valid_videos_decode(tmp_path, kind):
    path = make_odd(tmp_path)[kind]
    dataset = dataset_of(tmp_path, [path.name], 'raise', test_mode=True)
    item = dataset[0]
    assert tuple(item['inputs'].shape) == (1, 3, 4, 32, 32)


@pytest.mark.parametrize('kind', ['zero bytes', 'audio only'])
def test_broken_video_in_testing_names_it(tmp_path, kind):
    from x3d_plugin.datasets.video_io import VideoDecodeError
    path = make_hostile(tmp_path)[kind]
    dataset = dataset_of(tmp_path, [path.name], 'raise', test_mode=True)
    with pytest.raises(VideoDecodeError) as info:
        dataset[0]
    assert str(info.value).startswith(f'cannot decode video {str(path)!r} (')
    assert 'Remove it from the annotation list, or re-encode it' in str(
        info.value)


def test_worker_errors_are_unwrapped(tmp_path):
    import torch
    from x3d_plugin.datasets.video_dataset import worker_errors_unwrapped
    from x3d_plugin.datasets.video_io import VideoDecodeError
    path = make_hostile(tmp_path)['zero bytes']
    dataset = dataset_of(tmp_path, [path.name], 'raise', test_mode=True)
    loader = torch.utils.data.DataLoader(dataset,
                                         num_workers=1,
                                         collate_fn=lambda x: x)
    with pytest.raises(VideoDecodeError) as info:
        with worker_errors_unwrapped():
            next(iter(loader))
    message = str(info.value)
    assert message.startswith(f'cannot decode video {str(path)!r} (')
    assert 'Traceback' not in message
    assert 'DataLoader worker process' not in message
    assert '\n' not in message


class _FakeRunner:

    def __init__(self, work_dir, epoch=0):
        from mmengine.logging import MessageHub
        self.work_dir, self.epoch = str(work_dir), epoch
        self.message_hub = MessageHub.get_instance('x3d_hv_skipped')
        self.messages = []
        self.logger = self

    def warning(self, message):
        self.messages.append(message)


def test_skipped_videos_are_named_once_even_after_resume(tmp_path):
    from x3d_plugin.engine import SkippedVideosHook
    runner = _FakeRunner(tmp_path)
    hook = SkippedVideosHook(max_listed=2)
    hook.before_train(runner)
    try:
        log = tmp_path / 'skipped_videos_rank0.tsv'
        assert os.environ[SKIP_LOG_ENV] == str(log)
        log.write_text('a.mp4\ttruncated\nb.mp4\tno video stream\n'
                       'a.mp4\ttruncated\nc.mp4\tempty\n')
        hook.after_train_epoch(runner)
        assert runner.messages == [
            'epoch 1: 3 unreadable videos were skipped for the first time '
            'and replaced by other samples (3 in all; every skip is in '
            f'{log}):\n  a.mp4 (truncated)\n  b.mp4 (no video stream)\n'
            '  ... and 1 more'
        ]
        # Epoch 2 draws a.mp4 again: not named again, nothing logged.
        with open(log, 'a') as f:
            f.write('a.mp4\ttruncated\n')
        runner.epoch = 1
        hook.after_train_epoch(runner)
        assert len(runner.messages) == 1
        assert runner.message_hub.get_info('skipped_videos') == 3

        # A resumed run (a new hook) names only videos new to the file.
        resumed, runner.messages = SkippedVideosHook(), []
        resumed.before_train(runner)
        with open(log, 'a') as f:
            f.write('c.mp4\tempty\nd.mp4\tzero bytes\n')
        runner.epoch = 2
        resumed.after_train_epoch(runner)
        assert runner.messages == [
            'epoch 3: 1 unreadable videos were skipped for the first time '
            'and replaced by other samples (4 in all; every skip is in '
            f'{log}):\n  d.mp4 (zero bytes)'
        ]
    finally:
        hook.after_train(runner)
    assert SKIP_LOG_ENV not in os.environ


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'x3d_hv_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_training_with_hostile_videos_end_to_end(tmp_path, capsys):
    data = tmp_path / 'data'
    generate(data, train_per_class=6, val_per_class=1, frames=16)
    hostile = make_hostile(data / 'hostile')
    hostile.update({
        f'{k} again': v
        for k, v in make_hostile(data / 'hostile2').items()
        if k in ('truncated', 'zero bytes', 'random bytes', 'audio only')
    })
    assert len(hostile) == 10
    lines = [
        f'{p.relative_to(data)} {i % 8}'
        for i, p in enumerate(hostile.values())
    ]
    train_list = data / 'train_list_videos.txt'
    train_list.write_text(train_list.read_text() + '\n'.join(lines) + '\n')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        textwrap.dedent(f"""
        _base_ = [{str(ROOT / 'configs' / 'x3d_xs_demo.py')!r}]
        data_root = {str(data)!r}
        train_dataloader = dict(
            batch_size=16, num_workers=2, persistent_workers=False,
            dataset=dict(ann_file=f'{{data_root}}/train_list_videos.txt',
                         data_prefix=dict(video=data_root)))
        test_dataloader = dict(
            batch_size=2, num_workers=1, persistent_workers=False,
            dataset=dict(ann_file={str(tmp_path / 'bad_test.txt')!r},
                         data_prefix=dict(video=data_root)))
        val_cfg = None
        val_dataloader = None
        val_evaluator = None
        train_cfg = dict(max_epochs=2)
        param_scheduler = [dict(type='x3d_plugin.WarmupCosineLR',
                                max_epochs=2, warmup_epochs=1,
                                by_epoch=True, convert_to_iter_based=True)]
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval=2, save_best=None))
        custom_hooks = [dict(type='x3d_plugin.SkippedVideosHook')]
    """))
    work = tmp_path / 'work'
    load_tool('train').main([str(cfg), '--work-dir', str(work)])
    assert (work / 'epoch_2.pth').exists()
    log = sorted(work.glob('*/*.log'))[-1].read_text()
    # Each bad file named once in the log, with its reason, whatever the
    # number of times it was drawn.
    for path in hostile.values():
        assert log.count(f'  {path} (') == 1, path
    assert '(10 in all; every skip is in' in log
    assert 'epoch 0:' not in log

    # Testing on a zero-byte file: one line naming it.
    (tmp_path / 'bad_test.txt'
     ).write_text(f"{hostile['zero bytes'].relative_to(data)} 0\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        load_tool('test').main([
            str(cfg),
            str(work / 'epoch_2.pth'), '--work-dir',
            str(tmp_path / 'test_work')
        ])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert errors == [
        line for line in err.splitlines() if 'cannot decode' in line
    ]
    assert len(errors) == 1, err[-3000:]
    assert errors[0].startswith(
        f"error: cannot decode video '{hostile['zero bytes']}' (")
    assert 'Remove it from the annotation list, or re-encode it' in errors[0]
