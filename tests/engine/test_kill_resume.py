"""kill -9 in the middle of an epoch, then the same command with --resume,
ends with exactly the weights of a run that was never interrupted: one
process (tools/train.py) and two (tools/dist_train.sh, CPU, gloo).

SIGKILL leaves no time to save, so the resumed run goes back to the last
checkpoint, saved every 2 iterations here, and trains the iterations since
then again. Resuming inside an epoch leaves out the batches that epoch
trained before the checkpoint (PreemptionHook's resumed-epoch loader), so
every sample is still trained once per epoch, in the uninterrupted run's
order (the sampler shuffles with the seed and the epoch).

Exactly equal needs every random draw to be restored or absent: the
checkpoint holds the weights, the optimizer, the LR schedule and the
message hub, but not the random generators' states. The config here is
therefore deterministic apart from the seeded shuffle: no dropout, a fixed
scale, the test-mode clip and a centre crop. With random augmentation or
dropout the replayed iterations draw other crops and masks, so the weights
after a resume differ slightly (every sample is still seen once per
epoch)."""
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

    def before_train(self, runner):
        with open(os.path.join(self.out, f'pid{runner.rank}'), 'w') as f:
            f.write(str(os.getpid()))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.wait_at and runner.rank == self.wait_rank:
            open(os.path.join(self.out, 'waiting'), 'w').close()
            time.sleep(600)  # killed here

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        record = dict(iter=runner.iter + 1, labels=[
            int(s.gt_label) for s in data_batch['data_samples']])
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
    each of two), a checkpoint every 2 iterations, everything but the
    seeded shuffle deterministic."""
    (folder / 'kill_probe.py').write_text(PROBE)
    probe = dict(type='x3d_plugin.KillProbe', out=str(folder),
                 **(probe or {}))
    path = folder / 'cfg.py'
    path.write_text(textwrap.dedent(f"""
        _base_ = [{str(ROOT / 'configs' / 'x3d_xs_demo.py')!r}]
        custom_imports = dict(imports=['x3d_plugin', 'kill_probe'],
                              allow_failed_imports=False)
        data_root = {str(data_root)!r}
        model = dict(cls_head=dict(dropout_ratio=0.0))
        pipeline = [
            dict(type='x3d_plugin.PyAVInitAtScale', short_side=48),
            dict(type='x3d_plugin.SlowFastSampleFrames', clip_len=8,
                 frame_interval=2, target_fps=None, test_mode=True),
            dict(type='x3d_plugin.PyAVSparseDecode'),
            dict(type='CenterCrop', crop_size=48),
            dict(type='FormatShape', input_format='NCTHW'),
            dict(type='PackActionInputs')
        ]
        train_dataloader = dict(
            batch_size={batch_size}, num_workers=0, persistent_workers=False,
            dataset=dict(ann_file=f'{{data_root}}/train_list_videos.txt',
                         data_prefix=dict(video=data_root),
                         pipeline=pipeline))
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
        custom_hooks = [dict(type='x3d_plugin.PreemptionHook'), {probe!r}]
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
    path = folder / f'iters{rank}.jsonl'
    return {r['iter']: r['labels'] for r in
            map(json.loads, path.read_text().splitlines())}


def assert_same_training_state(ours, reference, bn_statistics=True):
    """Weights, buffers (the BN running statistics only if
    ``bn_statistics``) and the optimizer's state, tensor by tensor."""
    a = torch.load(ours, weights_only=False)
    b = torch.load(reference, weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == 8
    assert a['state_dict'].keys() == b['state_dict'].keys()
    compared = [k for k in b['state_dict'] if bn_statistics or not k.endswith(
        ('.running_mean', '.running_var'))]
    assert len(compared) >= 400  # of 568 tensors
    differ = [k for k in compared
              if not torch.equal(a['state_dict'][k], b['state_dict'][k])]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'
    state_a, state_b = a['optimizer']['state'], b['optimizer']['state']
    assert state_a.keys() == state_b.keys()
    for key in state_b:
        for name, value in state_b[key].items():
            assert torch.equal(state_a[key][name], value), (key, name)


@pytest.mark.parametrize('processes,port', [(1, None), (2, 29671)])
def test_kill_9_mid_epoch_then_resume_equals_uninterrupted(
        tiny_data, tmp_path, processes, port):
    """Iterations 1-3 trained, iter_2.pth saved; SIGKILL (every process:
    torchrun and its workers) while iteration 4 starts. `--resume` goes
    back to iter_2.pth, in epoch 1 with 2 of its 4 batches done: it
    replays iteration 3 on the same samples, trains 4-8, and the final
    weights and optimizer state equal the uninterrupted run's exactly.

    With two processes every parameter, ``num_batches_tracked`` and the
    optimizer state are equal; the BN running statistics are not compared:
    each process keeps its own (MMEngine's DDP wrapper does not broadcast
    buffers; SyncBuffersHook averages them after each epoch), and the
    checkpoint holds rank 0's only, so after the resume rank 1 continues
    from rank 0's statistics and the epoch's average differs (by up to 5%
    here). They only matter for evaluation, and PreciseBNHook recomputes
    them. ``model_wrapper_cfg=dict(type='MMDistributedDataParallel',
    broadcast_buffers=True)`` keeps one set on all processes instead."""
    batch = 2 // processes
    ports = iter([str(port + i) for i in range(3)] if port else [])

    def run(folder, *extra):
        env = environment(folder, PORT=next(ports, ''))
        return subprocess.run(
            command(folder / 'cfg.py', folder / 'work', processes, *extra),
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)

    reference = tmp_path / 'reference'
    reference.mkdir()
    write_config(reference, tiny_data, batch)
    proc = run(reference)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = iterations(reference)
    assert sorted(expected) == list(range(1, 9))

    killed = tmp_path / 'killed'
    killed.mkdir()
    write_config(killed, tiny_data, batch, probe=dict(wait_at=4))
    proc = subprocess.Popen(
        command(killed / 'cfg.py', killed / 'work', processes, '--resume'),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=environment(killed, PORT=next(ports, '')), cwd=ROOT,
        start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (killed / 'waiting').exists():
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() < deadline, 'iteration 4 never started'
            time.sleep(0.1)
        # torchrun starts its workers in sessions of their own: each is
        # killed by its pid, as a node failure would kill all of them.
        for rank in range(processes):
            os.kill(int((killed / f'pid{rank}').read_text()),
                    signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    work = killed / 'work'
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
    assert (work / 'last_checkpoint').read_text().strip() == str(
        work / 'iter_2.pth')
    first = iterations(killed)
    assert sorted(first) == [1, 2, 3]

    for name in ('iters0.jsonl', 'iters1.jsonl', 'waiting'):
        (killed / name).unlink(missing_ok=True)
    write_config(killed, tiny_data, batch)
    proc = run(killed, '--resume')
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'resumed epoch: 0, iter: 2' in out
    assert ('resumed inside epoch 1; its first 2 of 4 batches were trained '
            'before the stop and are left out') in out
    second = iterations(killed)
    assert sorted(second) == [3, 4, 5, 6, 7, 8]  # iteration 3 replayed
    assert {**first, **second} == expected
    assert first[3] == second[3]
    if processes == 2:
        assert iterations(killed, 1) != second  # the ranks' own halves
    assert_same_training_state(work / 'iter_8.pth',
                               reference / 'work' / 'iter_8.pth',
                               bn_statistics=processes == 1)
