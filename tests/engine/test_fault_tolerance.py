"""Fault tolerance of training: kills and full disks while saving, damaged
and missing checkpoints, NaN losses and SIGTERM (docs/fault_tolerance.md).

Most runs are in this process through the tools' ``main`` (the one-line
errors are read from stderr); kills, file-size limits and signals need a
child process. The data: 8 tiny training videos, batch 2, 2 epochs: 8
iterations, 4 an epoch.
"""
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from conftest import ROOT
from x3d_plugin.utils import checkpoint_file, fileio
from x3d_plugin.utils.checkpoint_file import (CorruptCheckpointError,
                                              MissingCheckpointError)
from x3d_plugin.utils.fileio import CheckpointWriteError, write_file_atomically
from x3d_plugin.datasets.demo_data import generate

# Hooks the runs use to record what they trained on, inject a NaN loss and
# stall at a known point (imported by the configs through custom_imports).
HOOKS_MODULE = '''
import json, os, signal, resource, time
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from x3d_plugin.registry import HOOKS


@HOOKS.register_module(force=True)
class FTRecordHook(Hook):
    """Append {iter, files, unchanged} a training iteration to
    work_dir/samples.jsonl (unchanged: no parameter changed)."""
    priority = 'HIGHEST'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._before = [p.detach().clone()
                        for p in runner.model.parameters()]

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        unchanged = all(torch.equal(a, p.detach()) for a, p in
                        zip(self._before, runner.model.parameters()))
        files = [os.path.basename(s.metainfo['filename'])
                 for s in data_batch['data_samples']]
        with open(os.path.join(runner.work_dir,
                               f'samples_rank{get_rank()}.jsonl'), 'a') as f:
            f.write(json.dumps(dict(iter=runner.iter + 1, files=files,
                                    unchanged=unchanged)) + '\\n')


@HOOKS.register_module(force=True)
class FTNaNHook(Hook):
    """The loss is NaN at the given (1-based) iterations."""

    def __init__(self, iters=()):
        self.iters = set(iters)
        self._handle = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 in self.iters:
            head = runner.model.cls_head
            self._handle = head.register_forward_hook(
                lambda m, i, out: out * float('nan'))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


@HOOKS.register_module(force=True)
class FTStallHook(Hook):
    """At iteration ``at`` (on ``rank``) write work_dir/stalled (holding the
    pid) and sleep ``seconds``: the test signals the process meanwhile."""

    def __init__(self, at, seconds=3.0, rank=0):
        self.at, self.seconds, self.rank = at, seconds, rank

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at and get_rank() == self.rank:
            with open(os.path.join(runner.work_dir, 'stalled.tmp'), 'w') as f:
                f.write(str(os.getpid()))
            os.replace(os.path.join(runner.work_dir, 'stalled.tmp'),
                       os.path.join(runner.work_dir, 'stalled'))
            time.sleep(self.seconds)


@HOOKS.register_module(force=True)
class FTStallInSaveHook(Hook):
    """Hang in the fsync of the named checkpoint's temporary file, after
    writing work_dir/stalled: the test kills the process there."""

    def __init__(self, name):
        self.name = name

    def before_train(self, runner):
        fsync, name, work_dir = os.fsync, self.name, runner.work_dir

        def stalling_fsync(fd):
            target = os.readlink(f'/proc/self/fd/{fd}')
            if f'.{name}.' in os.path.basename(target):
                with open(os.path.join(work_dir, 'stalled'), 'w') as f:
                    f.write(str(os.getpid()))
                time.sleep(600)
            return fsync(fd)

        os.fsync = stalling_fsync


@HOOKS.register_module(force=True)
class FTFileSizeLimitHook(Hook):
    """After epoch 1 is saved, limit files to half its checkpoint's size (a
    full disk for the next checkpoint only; logs stay small)."""
    priority = 'LOWEST'

    def after_train_epoch(self, runner):
        if runner.epoch == 0:
            size = os.path.getsize(os.path.join(runner.work_dir,
                                                'epoch_1.pth'))
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))
'''

TRAIN = ROOT / 'tools' / 'train.py'


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'x3d_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = load_tool('train')
test_tool = load_tool('test')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """The data and the hooks module (on sys.path)."""
    root = tmp_path_factory.mktemp('ft')
    generate(root / 'data', train_per_class=1, val_per_class=1, frames=16)
    (root / 'ft_test_hooks.py').write_text(HOOKS_MODULE)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


_RUN = [0]


def write_config(path, root, hooks='', extra=''):
    """A 2-epoch config of 4 iterations an epoch, no validation, one
    checkpoint kept; ``hooks``: more custom_hooks entries."""
    data = root / 'data'
    path.write_text(
        textwrap.dedent(f"""
        _base_ = [{str(ROOT / 'configs' / 'x3d_xs_demo.py')!r}]
        custom_imports = dict(imports=['x3d_plugin', 'ft_test_hooks'],
                              allow_failed_imports=False)
        data_root = {str(data)!r}
        # The demo's, with the file name kept for FTRecordHook.
        train_pipeline = [
            dict(type='x3d_plugin.PyAVInitAtScale', short_side=(48, 56),
                 on_error='skip'),
            dict(type='x3d_plugin.SlowFastSampleFrames', clip_len=8,
                 frame_interval=2, target_fps=None),
            dict(type='x3d_plugin.PyAVSparseDecode', on_error='skip'),
            dict(type='RandomCrop', size=48),
            dict(type='FormatShape', input_format='NCTHW'),
            dict(type='PackActionInputs',
                 meta_keys=('img_shape', 'filename'))]
        train_dataloader = dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            dataset=dict(ann_file=f'{{data_root}}/train_list_videos.txt',
                         data_prefix=dict(video=data_root),
                         pipeline=train_pipeline))
        test_dataloader = dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            dataset=dict(ann_file=f'{{data_root}}/val_list_videos.txt',
                         data_prefix=dict(video=data_root)))
        val_cfg = None
        val_dataloader = None
        val_evaluator = None
        train_cfg = dict(max_epochs=2, val_interval=10)
        param_scheduler = [dict(type='x3d_plugin.WarmupCosineLR',
                                max_epochs=2, warmup_epochs=1,
                                by_epoch=True, convert_to_iter_based=True)]
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval=1, max_keep_ckpts=1,
                                             save_best=None))
        # The base's default_hooks keep NonFiniteLossHook and
        # PreemptionHook beside a config's own custom_hooks.
        custom_hooks = [dict(type='x3d_plugin.FTRecordHook')] + [{hooks}]
    """) + textwrap.dedent(extra))
    return path


def train(cfg, work, *more):
    """tools/train.py's main in this process, under a new experiment name
    (a reused one would log into the earlier run's file)."""
    _RUN[0] += 1
    train_tool.main([
        str(cfg), '--work-dir',
        str(work), *more, '--cfg-options', f'experiment_name=run{_RUN[0]}'
    ])


def one_error_line(capsys, call):
    """Run ``call``; it must exit 1 with exactly one ``error:`` line on
    stderr and no traceback. Returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, err
    return lines[0]


def samples(work, rank=0):
    path = work / f'samples_rank{rank}.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines()]


def newest_log(work):
    """The text of the newest run's log in ``work``."""
    return sorted(work.glob('*/*.log'))[-1].read_text()


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def child_env(root):
    return dict(os.environ, PYTHONPATH=f'{ROOT}:{root}', OMP_NUM_THREADS='1')


def wait_for(path, proc, seconds=300):
    end = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < end, f'{path} never appeared'
        time.sleep(0.2)


@pytest.fixture(scope='module')
def trained(setup, tmp_path_factory):
    """One uninterrupted run (8 iterations): its work dir."""
    work = tmp_path_factory.mktemp('trained')
    cfg = write_config(work / 'cfg.py', setup)
    train(cfg, work / 'w')
    return work / 'w'


# --- writing checkpoints -------------------------------------------------


def test_write_file_atomically_replaces_whole_or_not_at_all(
        tmp_path, monkeypatch):
    target = tmp_path / 'last_checkpoint'
    target.write_text('old')
    write_file_atomically('new content', str(target))
    assert target.read_text() == 'new content'
    assert os.listdir(tmp_path) == ['last_checkpoint']  # no temp left

    # A rename that fails (as a kill before it would) leaves the old file.
    def failing_replace(src, dst):
        raise OSError('simulated')

    monkeypatch.setattr(fileio.os, 'replace', failing_replace)
    with pytest.raises(OSError, match='simulated'):
        write_file_atomically('newer', str(target))
    assert target.read_text() == 'new content'
    assert os.listdir(tmp_path) == ['last_checkpoint']


def test_stale_temp_of_a_killed_save_is_removed_on_next_save(tmp_path):
    dead = subprocess.Popen(['true'])
    dead.wait()  # a pid that is gone
    stale = tmp_path / f'.epoch_2.pth.{dead.pid}-abcd1234.tmp'
    stale.write_bytes(b'half a checkpoint')
    mine = tmp_path / f'.epoch_2.pth.{os.getpid()}-abcd1234.tmp'
    mine.write_bytes(b'a save in progress in a live process')
    other = tmp_path / f'.epoch_3.pth.{dead.pid}-abcd1234.tmp'
    other.write_bytes(b'another file')
    write_file_atomically(b'data', str(tmp_path / 'epoch_2.pth'))
    assert not stale.exists()
    assert mine.exists() and other.exists()
    assert (tmp_path / 'epoch_2.pth').read_bytes() == b'data'


def test_disk_full_error_names_the_file(tmp_path, monkeypatch):
    import errno

    def full(fd, data):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(fileio.os, 'fdopen', lambda fd, mode: _FullFile(fd))
    with pytest.raises(CheckpointWriteError) as info:
        write_file_atomically(b'x' * 100, str(tmp_path / 'epoch_3.pth'))
    assert isinstance(info.value, OSError)
    assert 'epoch_3.pth' in str(info.value)
    assert 'the disk is full' in str(info.value)
    assert os.listdir(tmp_path) == []


class _FullFile:

    def __init__(self, fd):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def write(self, data):
        import errno
        raise OSError(errno.ENOSPC, 'No space left on device')


def test_hook_arguments_are_checked():
    from x3d_plugin.engine import NonFiniteLossHook, PreemptionHook
    with pytest.raises(ValueError, match='max_skips'):
        NonFiniteLossHook(max_skips=-1)
    with pytest.raises(ValueError, match='SIGTERM'):
        PreemptionHook(signals=('SIGNOPE', ))


@pytest.mark.slow
def test_sigkill_during_save_keeps_the_previous_checkpoint(
        setup, tmp_path, capsys):
    cfg = write_config(
        tmp_path / 'cfg.py', setup,
        "dict(type='x3d_plugin.FTStallInSaveHook', name='epoch_2.pth')")
    work = tmp_path / 'w'
    proc = subprocess.Popen(
        [sys.executable,
         str(TRAIN),
         str(cfg), '--work-dir',
         str(work)],
        env=child_env(setup),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True)
    try:
        wait_for(work / 'stalled', proc)
        epoch_1 = sha256(work / 'epoch_1.pth')
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        proc.kill()
    # max_keep_ckpts=1 would have deleted epoch_1.pth before the save.
    assert sha256(work / 'epoch_1.pth') == epoch_1
    assert (work / 'last_checkpoint').read_text().strip() == str(work /
                                                                 'epoch_1.pth')
    assert not (work / 'epoch_2.pth').exists()
    temps = [n for n in os.listdir(work) if n.startswith('.epoch_2.pth.')]
    assert len(temps) == 1  # the killed save's
    assert [s['iter'] for s in samples(work)] == list(range(1, 9))

    (work / 'samples_rank0.jsonl').unlink()
    cfg_resume = write_config(tmp_path / 'cfg2.py', setup)
    train(cfg_resume, work, '--resume')
    assert [s['iter'] for s in samples(work)] == [5, 6, 7, 8]
    names = sorted(n for n in os.listdir(work)
                   if n.endswith('.pth') or n.startswith('.epoch'))
    assert names == ['epoch_2.pth']  # stale temp and epoch_1 gone
    assert torch.load(work / 'epoch_2.pth',
                      weights_only=False)['meta']['iter'] == 8


@pytest.mark.slow
def test_disk_full_is_one_line_and_keeps_the_previous_checkpoint(
        setup, tmp_path):
    cfg = write_config(tmp_path / 'cfg.py', setup,
                       "dict(type='x3d_plugin.FTFileSizeLimitHook')")
    work = tmp_path / 'w'
    proc = subprocess.run(
        [sys.executable,
         str(TRAIN),
         str(cfg), '--work-dir',
         str(work)],
        env=child_env(setup),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    errors = [
        line for line in proc.stderr.splitlines() if line.startswith('error:')
    ]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert str(work / 'epoch_2.pth') in errors[0]
    assert 'the disk is full' in errors[0]
    # The previous checkpoint is whole and still the one to resume.
    torch.load(work / 'epoch_1.pth', weights_only=False)
    assert checkpoint_file.checkpoint_damage(str(work / 'epoch_1.pth')) is None
    assert (work / 'last_checkpoint').read_text().strip() == str(work /
                                                                 'epoch_1.pth')
    assert not [n for n in os.listdir(work) if n.endswith('.tmp')]


# --- damaged and missing checkpoints ---------------------------------------


def _copy_work(trained, tmp_path):
    """A work dir holding a copy of the trained epoch_2.pth."""
    work = tmp_path / 'w'
    work.mkdir()
    ckpt = work / 'epoch_2.pth'
    ckpt.write_bytes((trained / 'epoch_2.pth').read_bytes())
    (work / 'last_checkpoint').write_text(str(ckpt))
    return work, ckpt


def test_truncated_checkpoint_through_auto_resume(setup, trained, tmp_path,
                                                  capsys):
    work, ckpt = _copy_work(trained, tmp_path)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])
    cfg = write_config(tmp_path / 'cfg.py', setup)
    line = one_error_line(capsys, lambda: train(cfg, work, '--resume'))
    assert f"checkpoint '{ckpt}' is truncated or corrupt" in line
    assert 'zip directory is missing or damaged' in line


def test_flipped_bit_through_test_tool(setup, trained, tmp_path, capsys):
    work, ckpt = _copy_work(trained, tmp_path)
    data = bytearray(ckpt.read_bytes())
    # A byte inside the largest tensor record (the middle of the file).
    data[len(data) // 2] ^= 0x01
    ckpt.write_bytes(bytes(data))
    cfg = write_config(tmp_path / 'cfg.py', setup)
    line = one_error_line(
        capsys,
        lambda: test_tool.main([str(cfg),
                                str(ckpt), '--work-dir',
                                str(work)]))
    assert str(ckpt) in line and 'fails its CRC check' in line


def test_damaged_checkpoints_through_the_apis(trained, tmp_path):
    from mmaction.registry import MODELS

    from x3d_plugin.models import x3d_recognizer_cfg
    from x3d_plugin.models.checkpoint import load_checkpoint_strict

    infer_tool = load_tool('infer')
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes((trained / 'epoch_2.pth').read_bytes()[:5000])
    model = MODELS.build(x3d_recognizer_cfg('xs', num_classes=8))
    config = str(ROOT / 'configs' / 'x3d_xs_demo.py')
    video = str(tmp_path / 'video.mp4')  # never reached
    for path, reason in ((empty, 'the file is empty'),
                         (truncated, 'its zip directory is missing')):
        with pytest.raises(CorruptCheckpointError) as info:
            load_checkpoint_strict(model, str(path))
        assert f"checkpoint '{path}' is truncated or corrupt (" in str(
            info.value) and reason in str(info.value)
        # init_recognizer (its own error type wraps it) and tools/infer.py:
        # the same one line.
        from x3d_plugin.apis import init_recognizer
        with pytest.raises(Exception) as info:
            init_recognizer(config, str(path), device='cpu')
        assert f"checkpoint '{path}' is truncated or corrupt" in str(
            info.value)
        with pytest.raises(SystemExit) as info:
            infer_tool.main(
                [video, '--config', config, '--checkpoint',
                 str(path)])
        assert str(info.value.code).startswith(
            f"error: checkpoint '{path}' is truncated or corrupt (")
        assert reason in str(info.value.code)
        assert '\n' not in str(info.value.code)
    # The other checkpoints beside it are named as the ones to use.
    assert f'newest beside it: {empty}' in str(info.value.code)


def test_resume_without_checkpoint_says_so_in_one_line(setup, tmp_path):
    cfg = write_config(tmp_path / 'cfg.py',
                       setup,
                       extra="""
        train_cfg = dict(max_epochs=1)
        train_dataloader['dataset']['indices'] = 2
    """)
    work = tmp_path / 'w'
    train(cfg, work, '--resume')
    log = newest_log(work)
    lines = [
        line for line in log.splitlines()
        if 'Resume' in line or 'resumed' in line.lower()
    ]
    assert len(lines) == 1, lines
    assert 'no checkpoint in' in lines[0]
    assert 'training starts from scratch' in lines[0]
    assert (work / 'epoch_1.pth').exists()


@pytest.mark.parametrize('content', ['missing', 'empty'])
def test_last_checkpoint_naming_nothing_is_an_error(setup, tmp_path, capsys,
                                                    content):
    work = tmp_path / 'w'
    work.mkdir()
    pointer = work / 'last_checkpoint'
    pointer.write_text(
        str(work / 'epoch_9.pth') if content == 'missing' else '')
    cfg = write_config(tmp_path / 'cfg.py', setup)
    line = one_error_line(capsys, lambda: train(cfg, work, '--resume'))
    assert str(pointer) in line and '--resume PATH' in line
    if content == 'missing':
        assert 'epoch_9.pth' in line and 'does not exist' in line
    else:
        assert 'is empty' in line
    assert not list(work.glob('*.pth'))


def test_missing_checkpoint_path_is_typed():
    with pytest.raises(MissingCheckpointError) as info:
        checkpoint_file.load_local_checkpoint('/nonexistent/epoch_1.pth')
    assert isinstance(info.value, FileNotFoundError)


# --- NaN losses -------------------------------------------------------------


def test_nan_loss_stops_before_the_step(setup, tmp_path, capsys,
                                        monkeypatch):
    """...and the training that raised leaves the process as it found it:
    PreemptionHook's SIGTERM handler and exit handler are gone."""
    import atexit
    sentinel = signal.getsignal(signal.SIGTERM)
    # The plugin's exit handlers still registered (libraries imported for
    # the first time during training may register their own).
    ours = []
    register, unregister = atexit.register, atexit.unregister

    def recording_register(function, *args, **kwargs):
        if getattr(function, '__module__', '').startswith('x3d_plugin'):
            ours.append(function)
        return register(function, *args, **kwargs)

    def recording_unregister(function):
        while function in ours:
            ours.remove(function)
        return unregister(function)

    monkeypatch.setattr(atexit, 'register', recording_register)
    monkeypatch.setattr(atexit, 'unregister', recording_unregister)
    cfg = write_config(tmp_path / 'cfg.py', setup,
                       "dict(type='x3d_plugin.FTNaNHook', iters=[6])")
    work = tmp_path / 'w'
    line = one_error_line(capsys, lambda: train(cfg, work))
    assert signal.getsignal(signal.SIGTERM) is sentinel
    assert ours == []
    assert 'loss nan at iteration 6 (epoch 2)' in line
    assert str(work / 'epoch_1.pth') in line
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth']
    assert [s['iter'] for s in samples(work)] == [1, 2, 3, 4, 5]
    state = torch.load(work / 'epoch_1.pth', weights_only=False)
    assert all(
        torch.isfinite(v).all() for v in state['state_dict'].values()
        if v.is_floating_point())


def test_nan_loss_skips_up_to_max_skips(setup, tmp_path, capsys):
    cfg = write_config(tmp_path / 'cfg.py',
                       setup,
                       extra="""
        default_hooks = dict(non_finite_loss=dict(max_skips=2))
        custom_hooks = [
            dict(type='x3d_plugin.FTRecordHook'),
            dict(type='x3d_plugin.FTNaNHook', iters=[2, 3, 7]),
        ]
    """)
    work = tmp_path / 'w'
    line = one_error_line(capsys, lambda: train(cfg, work))
    assert 'loss nan at iteration 7 (epoch 2) after skipping 2' in line
    recorded = {s['iter']: s['unchanged'] for s in samples(work)}
    assert recorded == {
        1: False,
        2: True,
        3: True,
        4: False,
        5: False,
        6: False
    }
    log = newest_log(work)
    assert 'step skipped (1 of at most 2)' in log
    assert 'step skipped (2 of at most 2)' in log


def test_nan_loss_skipped_steps_are_counted_at_the_end(setup, tmp_path):
    cfg = write_config(tmp_path / 'cfg.py',
                       setup,
                       extra="""
        train_cfg = dict(max_epochs=1)
        default_hooks = dict(non_finite_loss=dict(max_skips=2))
        custom_hooks = [dict(type='x3d_plugin.FTNaNHook', iters=[3])]
    """)
    work = tmp_path / 'w'
    train(cfg, work)
    log = newest_log(work)
    assert ('NonFiniteLossHook: 1 steps skipped for a non-finite loss, at '
            'iterations [3]') in log
    ckpt = torch.load(work / 'epoch_1.pth', weights_only=False)
    assert ckpt['message_hub']['runtime_info'][
        'non_finite_loss_skipped_iters'] == [3]


# --- SIGTERM ----------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_saves_and_resume_trains_the_rest(setup, trained, tmp_path,
                                                  capsys):
    cfg = write_config(tmp_path / 'cfg.py',
                       setup,
                       "dict(type='x3d_plugin.FTStallHook', at=6, seconds=3)",
                       extra="train_dataloader['num_workers'] = 1")
    work = tmp_path / 'w'
    proc = subprocess.Popen(
        [sys.executable,
         str(TRAIN),
         str(cfg), '--work-dir',
         str(work)],
        env=child_env(setup),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True)
    try:
        wait_for(work / 'stalled', proc)
        # As SLURM does: the whole process group, data-loader worker too.
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert (
        'SIGTERM received; stopped after iteration 6 (epoch 2) with '
        f'the training state saved to {work}/iter_6.pth') in newest_log(work)
    assert (work / 'last_checkpoint').read_text().strip() == str(work /
                                                                 'iter_6.pth')
    assert torch.load(work / 'iter_6.pth',
                      weights_only=False)['meta']['iter'] == 6
    # What tools/slurm_train.sh requeues on.
    assert (work / 'preempted').read_text() == str(work / 'iter_6.pth')

    train(write_config(tmp_path / 'cfg2.py', setup), work, '--resume')
    assert not (work / 'preempted').exists()
    got = samples(work)
    assert [s['iter'] for s in got] == list(range(1, 9))
    # Iterations 7 and 8 on the samples an uninterrupted run trained on.
    assert [s['files'] for s in got] == [s['files'] for s in samples(trained)]


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_both(setup, tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
    cfg = write_config(
        tmp_path / 'cfg.py', setup,
        "dict(type='x3d_plugin.FTStallHook', at=3, seconds=3, rank=1)")
    work = tmp_path / 'w'
    proc = subprocess.Popen([
        torchrun, '--nproc_per_node=2', '--master_port=29641',
        str(TRAIN),
        str(cfg), '--work-dir',
        str(work), '--launcher', 'pytorch'
    ],
                            env=child_env(setup),
                            cwd=ROOT,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for(work / 'stalled', proc)
        os.kill(int((work / 'stalled').read_text()), signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    # 8 videos over 2 ranks x batch 2: 2 iterations an epoch.
    assert torch.load(work / 'iter_3.pth',
                      weights_only=False)['meta']['iter'] == 3
    # The log is rank 0's, which was not signalled.
    assert ('another process was signalled; stopped after iteration 3'
            in newest_log(work))
    assert [s['iter'] for s in samples(work, 0)] == [1, 2, 3]
    assert [s['iter'] for s in samples(work, 1)] == [1, 2, 3]


def test_slurm_script_sends_sigterm_and_resumes(tmp_path):
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'srun').write_text('#!/bin/sh\nprintf "%s\\n" "$@" > '
                               f'{tmp_path}/srun_args\n')
    (fake / 'srun').chmod(0o755)
    env = dict(os.environ,
               PATH=f'{fake}:{os.environ["PATH"]}',
               AUTO_RESUME='1',
               SIGNAL_BEFORE_END='300',
               GPUS='2')
    proc = subprocess.run([
        'bash', 'tools/slurm_train.sh', 'part', 'job', 'cfg.py', 'wd', '--amp'
    ],
                          cwd=ROOT,
                          env=env,
                          capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / 'srun_args').read_text().splitlines()
    assert '--signal=TERM@300' in args
    assert args[-6:] == [
        'cfg.py', '--work-dir', 'wd', '--resume', '--launcher', 'slurm'
    ] or args[-7:-1] == [
        'cfg.py', '--work-dir', 'wd', '--resume', '--launcher', 'slurm'
    ]
    assert args[-1] == '--amp'
    env.pop('AUTO_RESUME')
    env.pop('SIGNAL_BEFORE_END')
    subprocess.run(['bash', 'tools/slurm_train.sh', 'p', 'j', 'c.py'],
                   cwd=ROOT,
                   env=env,
                   capture_output=True,
                   check=True)
    args = (tmp_path / 'srun_args').read_text().splitlines()
    assert '--signal=TERM@120' in args and '--resume' not in args


def test_slurm_script_requeues_a_run_stopped_on_the_signal(tmp_path):
    """Inside a batch job, a run that PreemptionHook stopped (the work
    directory's `preempted` file) is requeued; a finished one is not."""
    fake = tmp_path / 'bin'
    fake.mkdir()
    work = tmp_path / 'wd'
    # srun stands in for a training stopped at the time limit when
    # STOPPED is set.
    (fake / 'srun').write_text(
        '#!/bin/sh\nmkdir -p ' + str(work) + '\n'
        '[ -n "$STOPPED" ] && echo ' + str(work / 'iter_7.pth') + ' > '
        + str(work / 'preempted') + '\nexit 0\n')
    (fake / 'scontrol').write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol_args\n')
    for name in ('srun', 'scontrol'):
        (fake / name).chmod(0o755)
    env = dict(os.environ, PATH=f'{fake}:{os.environ["PATH"]}',
               AUTO_RESUME='1', SLURM_JOB_ID='4242', STOPPED='1')

    def run():
        return subprocess.run(
            ['bash', 'tools/slurm_train.sh', 'p', 'j', 'cfg.py', str(work)],
            cwd=ROOT, env=env, capture_output=True, text=True)

    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'scontrol_args').read_text() == 'requeue 4242\n'
    assert 'iter_7.pth; requeueing job 4242' in proc.stdout
    (work / 'preempted').unlink()
    env.pop('STOPPED')
    assert run().returncode == 0  # finished: no marker, no requeue
    assert (tmp_path / 'scontrol_args').read_text() == 'requeue 4242\n'
    env.update(STOPPED='1', REQUEUE='0')
    assert run().returncode == 0
    assert (tmp_path / 'scontrol_args').read_text() == 'requeue 4242\n'
