"""A timeline over a long video costs time in proportion to its length and
memory that does not grow with it: measured by counting, on small
generated videos, what is read and decoded (every packet the file is
demuxed into, every frame the decoder puts out, every reader opened) for
a video and one twice as long, and by the resident memory a reader adds
for a file of large packets. No clock is read. One reader serving many
windows returns exactly the frames of a sequential decode, however its
seeks land (MP4, Matroska) and on a file without usable timestamps (AVI
with B-frames).

docs/benchmarks.md has the times and peak memory for 1, 10 and 60 minutes
of 320p video (tools/benchmark/timeline_speed.py)."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from conftest import ROOT
from utils_helpers import smooth_frames
from x3d_plugin.apis import predict_timeline
from x3d_plugin.datasets.demo_data import write_video
from x3d_plugin.datasets.transforms import SparseVideoReader

FPS, GOP = 10, 10  # a keyframe a second
WINDOW = 8  # frames: 4 frames every 2nd


class CountingContainer:
    """An ``av`` container that counts the packets demuxed from it."""

    def __init__(self, container, counts):
        self._container, self._counts = container, counts
        counts['opened'] += 1

    def __getattr__(self, name):
        return getattr(self._container, name)

    def demux(self, *args, **kwargs):
        for packet in self._container.demux(*args, **kwargs):
            self._counts['demuxed'] += 1
            yield packet


@pytest.fixture
def counts(monkeypatch):
    """Files opened and packets demuxed by the video code, and frames the
    readers decoded."""
    import av
    counts = dict(opened=0, demuxed=0, readers=[])
    open_file = av.open
    monkeypatch.setattr(
        av, 'open', lambda *a, **k: CountingContainer(open_file(*a, **k),
                                                      counts))
    init = SparseVideoReader.__init__

    def recording_init(self, *args, **kwargs):
        counts['readers'].append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(SparseVideoReader, '__init__', recording_init)
    return counts


class NoModel:
    """The recognizer's place in predict_timeline, without a network: the
    windows' pipeline runs as with a model; every window scores 1 for
    class 0."""

    def __init__(self, cfg):
        self.cfg = cfg

    def test_step(self, batch):
        sample = batch['data_samples'][0]
        sample.pred_score = torch.tensor([1.0, 0.0])
        return [sample]


def no_model():
    cfg = Config.fromfile(str(ROOT / 'configs' / 'x3d_xs_demo.py'))
    cfg.test_pipeline = [
        dict(type='x3d_plugin.PyAVInitAtScale', short_side=32),
        dict(type='x3d_plugin.SlowFastSampleFrames', clip_len=4,
             frame_interval=2, target_fps=None, test_mode=True),
        dict(type='x3d_plugin.PyAVSparseDecode'),
        dict(type='CenterCrop', crop_size=32),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs')
    ]
    init_default_scope(cfg.default_scope)
    return NoModel(cfg)


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    """30 s and 60 s at 10 fps (300 and 600 frames), a keyframe every
    second, B-frames."""
    folder = tmp_path_factory.mktemp('long')
    paths = {}
    for seconds in (30, 60):
        paths[seconds] = str(folder / f'{seconds}s.mp4')
        write_video(paths[seconds], smooth_frames(seconds * FPS, 48, 64),
                    fps=FPS, options={'g': str(GOP), 'keyint_min': str(GOP),
                                      'sc_threshold': '0', 'bf': '2'})
    return paths


def timeline_cost(video, counts, stride=None):
    for key in ('opened', 'demuxed'):
        counts[key] = 0
    counts['readers'].clear()
    windows = predict_timeline(no_model(), video, stride=stride,
                               progress=False)
    return dict(windows=len(windows), opened=counts['opened'],
                demuxed=counts['demuxed'],
                readers=len(counts['readers']),
                decoded=sum(r.decoded_frames for r in counts['readers']))


@pytest.mark.parametrize('stride', [None, 3.0])
def test_timeline_reads_and_decodes_in_proportion_to_length(
        videos, counts, stride):
    """Touching windows (stride None) and windows 3 s apart. A reader is
    opened twice (the check that the file reads, then one reader for every
    window), so the whole packet index is read twice; each window then
    demuxes and decodes from the keyframe before it, at most a GOP plus a
    window of packets. Twice the video: twice the windows and at most
    twice the work, not four times."""
    short, long = (timeline_cost(videos[s], counts, stride)
                   for s in (30, 60))
    for seconds, cost in ((30, short), (60, long)):
        frames = seconds * FPS
        step = WINDOW if stride is None else int(stride * FPS)
        assert cost['windows'] == (frames - WINDOW) // step + 1
        assert cost['readers'] == 2
        index = 2 * frames  # two readers, each reads the index once
        per_window = GOP + WINDOW
        assert index < cost['demuxed'] <= (
            index + cost['windows'] * per_window), cost
        assert cost['decoded'] <= cost['windows'] * per_window, cost
        if stride is None:
            # Windows touch: every frame up to the last window's end is
            # decoded at least once.
            assert cost['decoded'] >= cost['windows'] * WINDOW, cost
    assert long['windows'] == 2 * short['windows'] + (stride is None)
    for key in ('demuxed', 'decoded', 'opened'):
        assert long[key] <= 2.1 * short[key], (key, short, long)


def resident_bytes():
    with open('/proc/self/statm') as f:
        pages = int(f.read().split()[1])
    import resource
    return pages * resource.getpagesize()


def noise_video(path, frames, seed=0):
    """Lossless noise at 320x240: about 120 kB a frame, so that holding a
    file's packets shows in the resident memory."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (frames, 240, 320, 3), dtype=np.uint8)
    write_video(path, noise, fps=FPS,
                options={'crf': '0', 'preset': 'ultrafast', 'g': '20'})


def test_reader_memory_does_not_grow_with_the_file(tmp_path):
    """A reader on a 20 MB file and on one twice that: decoding the last
    frames (the whole packet index read, the file seeked through) adds far
    less resident memory than a tenth of the file."""
    warm = tmp_path / 'warm.mp4'
    noise_video(warm, 20)
    with SparseVideoReader(str(warm)) as reader:  # libraries' own buffers
        reader.get_batch([0, 19], size=(120, 160))
    for frames in (160, 320):
        path = tmp_path / f'noise_{frames}.mp4'
        noise_video(path, frames, seed=frames)
        size = path.stat().st_size
        assert size > frames * 100_000
        before = resident_bytes()
        reader = SparseVideoReader(str(path))
        batch = reader.get_batch([frames - 12, frames - 1], size=(120, 160))
        grown = resident_bytes() - before
        reader.close()
        assert batch.shape == (2, 120, 160, 3)
        assert reader.decoded_frames <= 20  # from the last keyframe on
        assert grown < size / 10, (grown, size)


def decode_all(path):
    """Ground truth: every frame, decoded in order by PyAV."""
    import av
    with av.open(path) as container:
        return [f.to_ndarray(format='rgb24')
                for f in container.decode(video=0)]


# Batches as one reader gets them from a timeline and beyond: forwards
# window by window, across keyframes, back to earlier frames, repeats, the
# first and the last frame.
BATCHES = [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18, 20, 22], [95, 101, 107],
           [3, 3, 290, 299], [40, 41], [299], [150, 152, 154, 156], [0]]


class BadSeek:
    """An ``av`` container whose seek misses: it lands on a keyframe before
    the one asked for (``'earlier'``), after it (``'later'``), or raises
    (``'raises'``), as seeks in some formats do."""

    def __init__(self, container, how):
        self._container, self._how = container, how

    def __getattr__(self, name):
        return getattr(self._container, name)

    def seek(self, offset, **kwargs):
        if self._how == 'raises':
            raise OSError('seek not supported')
        offset = offset // 2 if self._how == 'earlier' else offset * 2 + 1
        return self._container.seek(offset, **kwargs)


@pytest.mark.parametrize('seek', ['exact', 'earlier', 'later', 'raises'])
def test_one_reader_many_batches_equal_sequential_decode(
        videos, monkeypatch, seek):
    """Every frame of every batch equals the sequential decode's, however
    the seek before a batch lands: where it lands after the keyframe the
    reader reads from the file's start instead."""
    truth = decode_all(videos[30])
    if seek != 'exact':
        import av
        open_file = av.open
        monkeypatch.setattr(
            av, 'open', lambda *a, **k: BadSeek(open_file(*a, **k), seek))
    reader = SparseVideoReader(videos[30])
    for inds in BATCHES:
        frames = reader.get_batch(inds)
        for frame, i in zip(frames, inds):
            np.testing.assert_array_equal(frame, truth[i], err_msg=str(i))
    assert reader._timed  # the index was trusted throughout
    if seek != 'raises':
        assert reader.seeks > 0
    reader.close()


@pytest.fixture(scope='module')
def other_containers(tmp_path_factory):
    """The 30 s video's frames in Matroska (timestamps in presentation
    order, seekable by its cues) and in AVI, whose timestamps with B-frames
    are in decode order and so useless for finding frames."""
    folder = tmp_path_factory.mktemp('containers')
    paths = {}
    for ext in ('mkv', 'avi'):
        paths[ext] = str(folder / f'30s.{ext}')
        write_video(paths[ext], smooth_frames(30 * FPS, 48, 64), fps=FPS,
                    options={'g': str(GOP), 'keyint_min': str(GOP),
                             'sc_threshold': '0', 'bf': '2'})
    return paths


def test_one_reader_many_batches_in_matroska(other_containers):
    truth = decode_all(other_containers['mkv'])
    reader = SparseVideoReader(other_containers['mkv'])
    for inds in BATCHES:
        frames = reader.get_batch(inds)
        for frame, i in zip(frames, inds):
            np.testing.assert_array_equal(frame, truth[i], err_msg=str(i))
    assert reader._timed and reader.seeks > 0
    reader.close()


@pytest.mark.parametrize('untimed', ['avi', 'forced'])
def test_untimed_reader_goes_on_from_the_last_frame(
        videos, other_containers, untimed):
    """Without usable timestamps frames are counted from the start; a
    batch after the last decoded frame continues from there rather than
    decoding from the start again, and one before it starts over. An AVI
    with B-frames is such a file; ``forced`` takes the MP4 as one."""
    path = other_containers['avi'] if untimed == 'avi' else videos[30]
    truth = decode_all(path)
    reader = SparseVideoReader(path)
    if untimed == 'forced':
        reader._timed = False
    assert not reader._timed
    decoded = []
    for inds in BATCHES:
        frames = reader.get_batch(inds)
        for frame, i in zip(frames, inds):
            np.testing.assert_array_equal(frame, truth[i], err_msg=str(i))
        decoded.append(reader.decoded_frames)
    # The first three windows, one after the other: frames 0-22 and the
    # few the decoder holds back for B-frames, decoded once.
    assert decoded[2] <= 23 + GOP, decoded
    reader.close()


def test_timeline_benchmark_runs(tmp_path, capsys):
    """tools/benchmark/timeline_speed.py end to end on a 6 s video, data
    path only (its numbers are not asserted)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'timeline_speed', ROOT / 'tools' / 'benchmark' / 'timeline_speed.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(['--data-only', '--minutes', '0.1', '--out-dir',
                 str(tmp_path)])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith('| 0.1 min')]
    assert len(rows) == 1
    # 180 frames, windows of 16: 11 windows.
    assert rows[0].split('|')[3].strip() == '11', rows
