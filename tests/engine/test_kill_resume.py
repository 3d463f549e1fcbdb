"""A run stopped in the middle of an epoch and resumed with `--resume` ends
with exactly the weights, buffers and optimizer state of a run that was
never interrupted, with the demo's real recipe: random scale jitter and
crops, random clip offsets, dropout, two data-loader workers; one process
(tools/train.py) and two (tools/dist_train.sh, CPU, gloo); stopped by
SIGKILL or by SIGTERM.

SIGKILL leaves no time to save, so the resumed run goes back to the last
checkpoint, saved every 2 iterations here, and trains the iterations since
then again; SIGTERM saves after the iteration in progress
(PreemptionHook). What makes the replay exact (docs/fault_tolerance.md):
the checkpoint holds every process's random generator states (X3DRunner),
each sample's augmentation is drawn from (seed, epoch, index)
(SeededSampler), the loop leaves out the batches the interrupted epoch
trained (ResumableEpochBasedTrainLoop), and with two processes rank 0's BN
statistics are broadcast at every forward (``broadcast_buffers=True`` in
the base config), so the checkpoint's statistics are every process's."""
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
from x3d_plugin.datasets.demo_data import generate

pytestmark = pytest.mark.slow

# Imported by the training children through custom_imports: records the
# labels each iteration trained on and each process's pid, and holds
# rank ``wait_rank`` before iteration ``wait_at`` until it is killed.
PROBE = '''
import json, os, time
from mmengine.hooks import Hook
from x3d_plugin.registry import HOOKS


@HOOKS.register_module()
class KillProbe(Hook):

    def __init__(self, out, wait_at=None, wait_rank=0):
        self.out, self.wait_at, self.wait_rank = out, wait_at, wait_rank
        self.release = os.path.join(out, 'release')

    def before_train(self, runner):
        with open(os.path.join(self.out, f'pid{runner.rank}'), 'w') as f:
            f.write(str(os.getpid()))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.wait_at and runner.rank == self.wait_rank:
            open(os.path.join(self.out, 'waiting'), 'w').close()
            end = time.time() + 600
            # killed here, or signalled and then released
            while time.time() < end and not os.path.exists(self.release):
                time.sleep(0.05)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        import hashlib
        crops = hashlib.sha256(b''.join(
            x.numpy().tobytes() for x in data_batch['inputs'])).hexdigest()
        record = dict(iter=runner.iter + 1, labels=[
            int(s.gt_label) for s in data_batch['data_samples']],
            crops=crops, batch_idx=batch_idx)
        with open(os.path.join(self.out, f'iters{runner.rank}.jsonl'),
                  'a') as f:
            f.write(json.dumps(record) + '\\n')
'''


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_demo')
    generate(root, train_per_class=1, val_per_class=1, frames=16)
    return root


def write_config(folder, data_root, batch_size, probe=None):
    """8 videos, 2 epochs of 4 iterations (batch 2 on one process or 1 on
    each of two), a checkpoint every 2 iterations, the demo's random
    training pipeline and dropout, two persistent data-loader workers."""
    (folder / 'kill_probe.py').write_text(PROBE)
    probe = dict(type='x3d_plugin.KillProbe', out=str(folder),
                 **(probe or {}))
    path = folder / 'cfg.py'
    path.write_text(textwrap.dedent(f"""
        _base_ = [{str(ROOT / 'configs' / 'x3d_xs_demo.py')!r}]
        custom_imports = dict(imports=['x3d_plugin', 'kill_probe'],
                              allow_failed_imports=False)
        data_root = {str(data_root)!r}
        train_dataloader = dict(
            batch_size={batch_size}, num_workers=2, persistent_workers=True,
            dataset=dict(ann_file=f'{{data_root}}/train_list_videos.txt',
                         data_prefix=dict(video=data_root)))
        val_cfg = None
        val_dataloader = None
        val_evaluator = None
        train_cfg = dict(max_epochs=2)
        param_scheduler = [dict(type='x3d_plugin.WarmupCosineLR',
                                max_epochs=2, warmup_epochs=1,
                                by_epoch=True, convert_to_iter_based=True)]
        default_hooks = dict(
            logger=dict(interval=1),
            checkpoint=dict(by_epoch=False, interval=2, max_keep_ckpts=-1,
                            save_best=None))
        custom_hooks = [{probe!r}]
    """))
    return path


def environment(folder, **extra):
    return dict(os.environ, PYTHONPATH=f'{ROOT}:{folder}',
                OMP_NUM_THREADS='1', PYTHON=sys.executable, **extra)


def command(cfg, work, processes, *extra):
    if processes == 1:
        return [sys.executable, 'tools/train.py', str(cfg), '--work-dir',
                str(work), *extra]
    return ['bash', 'tools/dist_train.sh', str(cfg), str(processes),
            '--work-dir', str(work), *extra]


def iterations(folder, rank=0):
    """{iteration: (labels, hash of the augmented batch, batch index)}."""
    path = folder / f'iters{rank}.jsonl'
    return {r['iter']: (r['labels'], r['crops'], r['batch_idx']) for r in
            map(json.loads, path.read_text().splitlines())}


def assert_same_training_state(ours, reference, processes):
    """Weights, buffers (BN statistics included) and the optimizer's state,
    tensor by tensor; the random generator states of every process."""
    a = torch.load(ours, weights_only=False)
    b = torch.load(reference, weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == 8
    assert a['state_dict'].keys() == b['state_dict'].keys()
    assert len(b['state_dict']) >= 560  # of 568 tensors
    differ = [k for k in b['state_dict']
              if not torch.equal(a['state_dict'][k], b['state_dict'][k])]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'
    state_a, state_b = a['optimizer']['state'], b['optimizer']['state']
    assert state_a.keys() == state_b.keys()
    for key in state_b:
        for name, value in state_b[key].items():
            assert torch.equal(state_a[key][name], value), (key, name)
    assert len(a['random_states']) == processes
    for ours_, theirs in zip(a['random_states'], b['random_states']):
        assert torch.equal(ours_['torch'], theirs['torch'])


_REFERENCES = {}


def run_training(folder, processes, *extra, port=None):
    env = environment(folder, PORT=str(port or ''))
    return subprocess.run(
        command(folder / 'cfg.py', folder / 'work', processes, *extra),
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def reference_run(tiny_data, tmp_path_factory, processes, port):
    """The uninterrupted run (once per number of processes)."""
    if processes not in _REFERENCES:
        folder = tmp_path_factory.mktemp(f'reference{processes}')
        write_config(folder, tiny_data, 2 // processes)
        proc = run_training(folder, processes, port=port)
        assert proc.returncode == 0, proc.stderr[-3000:]
        expected = iterations(folder)
        assert sorted(expected) == list(range(1, 9))
        _REFERENCES[processes] = folder, expected
    return _REFERENCES[processes]


@pytest.mark.parametrize('processes,stop,port', [(1, 'SIGKILL', None),
                                                 (2, 'SIGKILL', 29671),
                                                 (1, 'SIGTERM', None),
                                                 (2, 'SIGTERM', 29681)])
def test_stop_mid_epoch_then_resume_equals_uninterrupted(
        tiny_data, tmp_path, tmp_path_factory, processes, stop, port):
    """Iterations 1-3 trained and iter_2.pth saved when iteration 4 starts.

    SIGKILL (every process: torchrun and its workers) then: `--resume`
    goes back to iter_2.pth, in epoch 1 with 2 of its 4 batches done, and
    replays iteration 3 on the same samples with the same crops.
    SIGTERM (to rank 0 only; the other rank stops with it) then: iteration
    4 ends, iter_4.pth is saved and the run exits 0; `--resume` continues
    with epoch 2. Either way the final weights, buffers, optimizer state
    and random generator states equal the uninterrupted run's exactly, and
    the log numbers the resumed iterations by their place in the epoch."""
    reference, expected = reference_run(tiny_data, tmp_path_factory,
                                        processes, port)
    killed = tmp_path / 'killed'
    killed.mkdir()
    write_config(killed, tiny_data, 2 // processes, probe=dict(wait_at=4))
    proc = subprocess.Popen(
        command(killed / 'cfg.py', killed / 'work', processes, '--resume'),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=environment(killed, PORT=str(port + 1) if port else ''),
        cwd=ROOT, start_new_session=True)
    try:
        deadline = time.time() + 600
        while not (killed / 'waiting').exists():
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() < deadline, 'iteration 4 never started'
            time.sleep(0.1)
        if stop == 'SIGKILL':
            # torchrun starts its workers in sessions of their own: each is
            # killed by its pid, as a node failure would kill all of them.
            for rank in range(processes):
                os.kill(int((killed / f'pid{rank}').read_text()),
                        signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(int((killed / 'pid0').read_text()), signal.SIGTERM)
            time.sleep(0.5)
            (killed / 'release').touch()
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    work = killed / 'work'
    first = iterations(killed)
    if stop == 'SIGKILL':
        assert proc.returncode == -signal.SIGKILL, out[-3000:]
        assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
        assert sorted(first) == [1, 2, 3]
        resumed_from, replayed = 2, [3, 4, 5, 6, 7, 8]
    else:
        assert proc.returncode == 0, out[-3000:]
        assert 'SIGTERM received; stopped after iteration 4' in out
        assert sorted(first) == [1, 2, 3, 4]
        resumed_from, replayed = 4, [5, 6, 7, 8]
    assert (work / 'last_checkpoint').read_text().strip() == str(
        work / f'iter_{resumed_from}.pth')

    for name in ('iters0.jsonl', 'iters1.jsonl', 'waiting', 'release'):
        (killed / name).unlink(missing_ok=True)
    write_config(killed, tiny_data, 2 // processes)
    proc = run_training(killed, processes, '--resume',
                        port=port + 2 if port else None)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f'resumed epoch: 0, iter: {resumed_from}' in out
    assert (f'Resumed inside epoch 1; its first {resumed_from} of 4 batches '
            'were trained before the stop and are left out') in out
    second = iterations(killed)
    assert sorted(second) == replayed
    # Same samples, same augmentation, same place in the epoch.
    assert {**first, **second} == expected
    if stop == 'SIGKILL':
        assert first[3] == second[3]
        assert 'Epoch(train) [1][3/4]' in out
    if processes == 2:
        assert iterations(killed, 1) != second  # the ranks' own halves
    assert_same_training_state(work / 'iter_8.pth',
                               reference / 'work' / 'iter_8.pth', processes)
