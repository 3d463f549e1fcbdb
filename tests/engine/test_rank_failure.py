"""One process of a 2-process tools/dist_train.sh run (CPU, gloo) dies --
killed with SIGKILL, or an exception in a hook --: the run ends within a
bounded time with a message naming the failed rank, instead of the other
process waiting in a collective forever.

What ends it: the surviving process's gloo collective fails as soon as the
dead peer's connection closes, and torchrun, which watches its workers,
stops the others when one has failed (SIGTERM, SIGKILL 30 s later) and
prints which rank failed first and how. The process-group timeout
(``env_cfg.dist_cfg.timeout``, seconds) bounds a collective whose peer
vanished without closing its connection (a node that lost power)."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT
from x3d_plugin.datasets.demo_data import generate

# Within this the run must be over; a hang would last the gloo default of
# 30 minutes.
BOUND_S = 90

PROBE = '''
import os, time
from mmengine.hooks import Hook
from x3d_plugin.registry import HOOKS


@HOOKS.register_module()
class FailingRank(Hook):
    """On rank ``rank`` before iteration ``at``: raise, or wait to be
    killed."""

    def __init__(self, out, how, rank=1, at=3):
        self.out, self.how, self.rank, self.at = out, how, rank, at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 != self.at or runner.rank != self.rank:
            return
        if self.how == 'exception':
            raise RuntimeError(f'injected failure on rank {runner.rank} '
                               f'before iteration {self.at}')
        with open(os.path.join(self.out, 'waiting.tmp'), 'w') as f:
            f.write(str(os.getpid()))
        os.rename(os.path.join(self.out, 'waiting.tmp'),
                  os.path.join(self.out, 'waiting'))
        time.sleep(600)  # killed here
'''


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_demo')
    generate(root, train_per_class=1, val_per_class=1, frames=16)
    return root


def write_config(folder, data_root, how):
    (folder / 'failing_rank.py').write_text(PROBE)
    path = folder / 'cfg.py'
    path.write_text(textwrap.dedent(f"""
        _base_ = [{str(ROOT / 'configs' / 'x3d_xs_demo.py')!r}]
        custom_imports = dict(imports=['x3d_plugin', 'failing_rank'],
                              allow_failed_imports=False)
        data_root = {str(data_root)!r}
        train_dataloader = dict(
            batch_size=1, num_workers=0, persistent_workers=False,
            dataset=dict(ann_file=f'{{data_root}}/train_list_videos.txt',
                         data_prefix=dict(video=data_root)))
        val_cfg = None
        val_dataloader = None
        val_evaluator = None
        train_cfg = dict(max_epochs=2)
        env_cfg = dict(dist_cfg=dict(backend='nccl', timeout=60))
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval=1, save_best=None))
        custom_hooks = [
            dict(type='x3d_plugin.FailingRank', out={str(folder)!r},
                 how={how!r})]
    """))
    return path


@pytest.mark.parametrize('how,port', [('sigkill', 29681),
                                      ('exception', 29685)])
def test_one_rank_dies_the_run_ends_naming_it(tiny_data, tmp_path, how,
                                              port):
    """Rank 1 fails before iteration 3 while rank 0 goes on into that
    iteration's gradient all-reduce: torchrun exits non-zero within
    BOUND_S, naming rank 1 and how it ended, and no process of the run is
    left."""
    cfg = write_config(tmp_path, tiny_data, how)
    started = time.monotonic()
    proc = subprocess.Popen(
        ['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir',
         str(tmp_path / 'work')],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONPATH=f'{ROOT}:{tmp_path}',
                 OMP_NUM_THREADS='1', PYTHON=sys.executable,
                 PORT=str(port)),
        cwd=ROOT, start_new_session=True)
    try:
        if how == 'sigkill':
            deadline = time.monotonic() + 300
            while not (tmp_path / 'waiting').exists():
                assert proc.poll() is None, proc.communicate()[0][-3000:]
                assert time.monotonic() < deadline, 'iteration 3 not reached'
                time.sleep(0.1)
            victim = int((tmp_path / 'waiting').read_text())
            os.kill(victim, signal.SIGKILL)
            started = time.monotonic()
        out, _ = proc.communicate(timeout=BOUND_S + 300)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, out[-3000:]
    assert 'ChildFailedError' in out, out[-3000:]
    root_cause = out[out.index('Root Cause'):]
    assert 'rank      : 1 (local_rank: 1)' in root_cause, out[-3000:]
    if how == 'sigkill':
        assert 'Signal 9 (SIGKILL) received by PID' in root_cause, root_cause
        assert f'(pid: {victim})' in root_cause, root_cause
    else:
        assert 'exitcode  : 1' in root_cause, root_cause
        assert ('RuntimeError: injected failure on rank 1 before iteration '
                '3') in out
    assert took < BOUND_S, (took, out[-3000:])
