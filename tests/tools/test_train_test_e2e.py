"""End to end through the runner on a tiny generated dataset: train,
checkpoint, resume, multi-view test, dump; 2-process CPU training; and the
errors a user meets without data."""
import os
import pickle
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT
from x3d_plugin.datasets.demo_data import generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny_demo')
    generate(root, train_per_class=2, val_per_class=1, frames=16)
    return root


def write_config(path, data_root, extra=''):
    path.write_text(textwrap.dedent(f"""
        _base_ = [{str(ROOT / 'configs' / 'x3d_xs_demo.py')!r}]
        data_root = {str(data_root)!r}

        def _dataset(split):
            return dict(ann_file=f'{{data_root}}/{{split}}_list_videos.txt',
                        data_prefix=dict(video=data_root))

        train_dataloader = dict(batch_size=4, num_workers=0,
                                persistent_workers=False,
                                dataset=_dataset('train'))
        val_dataloader = dict(batch_size=4, num_workers=0,
                              persistent_workers=False,
                              dataset=_dataset('val'))
        test_dataloader = dict(batch_size=2, num_workers=0,
                               persistent_workers=False,
                               dataset=_dataset('val'))
        train_cfg = dict(max_epochs=2, val_interval=1)
        param_scheduler = [dict(type='x3d_plugin.WarmupCosineLR',
                                max_epochs=2, warmup_epochs=1,
                                by_epoch=True, convert_to_iter_based=True)]
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval=1, max_keep_ckpts=5))
        custom_hooks = [
            dict(type='x3d_plugin.PreciseBNHook', num_iters=2, interval=1),
            dict(type='x3d_plugin.SkippedVideosHook')]
    """) + textwrap.dedent(extra))
    return path


def run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    env.update(kwargs.pop('env', {}))
    return subprocess.run(args, capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600, **kwargs)


def test_train_resume_test_dump(tiny_data, tmp_path):
    cfg = write_config(tmp_path / 'cfg.py', tiny_data)
    work = tmp_path / 'work'
    train = [sys.executable, 'tools/train.py', str(cfg), '--work-dir',
             str(work)]
    proc = run(train + ['--cfg-options', 'train_cfg.max_epochs=1'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'PreciseBN: BN statistics recomputed over 2 batches' in (
        proc.stdout + proc.stderr)
    first = torch.load(work / 'epoch_1.pth', weights_only=False)
    iters_per_epoch = 4  # 16 videos / batch 4
    assert first['meta']['epoch'] == 1
    assert first['meta']['iter'] == iters_per_epoch

    proc = run(train + ['--resume'])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r'resumed epoch: 1, iter: 4', out), out[-3000:]
    assert 'Epoch(train)  [1]' not in out.split('resumed epoch')[1]
    second = torch.load(work / 'epoch_2.pth', weights_only=False)
    assert second['meta']['epoch'] == 2
    assert second['meta']['iter'] == 2 * iters_per_epoch
    # The schedule went on from where it stopped (cosine reaches 0 at the
    # end of epoch 2; the last LR used is one step before that).
    lr = second['optimizer']['param_groups'][0]['lr']
    assert 0 < lr < 0.1 * 0.05

    dump = tmp_path / 'scores.pkl'
    proc = run([sys.executable, 'tools/test.py', str(cfg),
                str(work / 'epoch_2.pth'), '--work-dir', str(work),
                '--dump', str(dump)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Test result: {"acc/top1":' in proc.stdout
    with open(dump, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 8  # one per validation video
    for result in results:
        scores = torch.as_tensor(result['pred_score'])
        assert scores.shape == (8, )
        # 2 clips x 3 crops averaged as probabilities.
        assert float(scores.sum()) == pytest.approx(1.0, abs=1e-5)
        assert (scores >= 0).all()

    # BN folded into the convolutions: the same scores.
    fused_dump = tmp_path / 'scores_fused.pkl'
    proc = run([sys.executable, 'tools/test.py', str(cfg),
                str(work / 'epoch_2.pth'), '--work-dir', str(work),
                '--dump', str(fused_dump), '--fuse-conv-bn'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'folded 84 BN layers into convolutions' in proc.stdout + \
        proc.stderr
    with open(fused_dump, 'rb') as f:
        fused = pickle.load(f)
    for a, b in zip(results, fused):
        torch.testing.assert_close(
            torch.as_tensor(b['pred_score']),
            torch.as_tensor(a['pred_score']), rtol=1e-4, atol=1e-5)


def test_dist_train_two_cpu_processes_identical_weights(tiny_data, tmp_path):
    hook = tmp_path / 'save_rank_weights.py'
    hook.write_text(textwrap.dedent("""
        import os, torch
        from mmengine.dist import get_rank
        from mmengine.hooks import Hook
        from mmengine.model import is_model_wrapper
        from x3d_plugin.registry import HOOKS

        @HOOKS.register_module()
        class SaveRankWeights(Hook):
            def after_train(self, runner):
                model = runner.model
                if is_model_wrapper(model):
                    model = model.module
                torch.save(model.state_dict(), os.path.join(
                    runner.work_dir, f'weights_rank{get_rank()}.pth'))
    """))
    cfg = write_config(tmp_path / 'cfg.py', tiny_data, """
        custom_imports = dict(imports=['x3d_plugin', 'save_rank_weights'],
                              allow_failed_imports=False)
        custom_hooks = [dict(type='x3d_plugin.SaveRankWeights'),
                        dict(type='x3d_plugin.PreciseBNHook', num_iters=1)]
        train_cfg = dict(max_epochs=1)
        val_cfg = None
        val_dataloader = None
        val_evaluator = None
        train_dataloader['batch_size'] = 2
    """)
    work = tmp_path / 'work'
    proc = run(['bash', 'tools/dist_train.sh', str(cfg), '2', '--work-dir',
                str(work)],
               env=dict(PORT='29634', PYTHON=sys.executable,
                        PYTHONPATH=f'{ROOT}:{tmp_path}'))
    assert proc.returncode == 0, proc.stderr[-4000:]
    w0 = torch.load(work / 'weights_rank0.pth', weights_only=True)
    w1 = torch.load(work / 'weights_rank1.pth', weights_only=True)
    assert w0.keys() == w1.keys()
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0,
                                   msg=key)
    # 16 videos over 2 ranks x batch 2: 4 iterations, and rank 0's weights
    # are the ones in the checkpoint.
    ckpt = torch.load(work / 'epoch_1.pth', weights_only=False)
    assert ckpt['meta']['iter'] == 4
    for key, value in ckpt['state_dict'].items():
        torch.testing.assert_close(value, w0[key], rtol=0, atol=0)


def test_missing_kinetics_is_a_clear_error(tmp_path):
    mim = os.path.join(os.path.dirname(sys.executable), 'mim')
    if not os.path.exists(mim):
        pytest.skip('mim is not installed beside this python')
    proc = run([mim, 'train', 'mmaction', 'configs/x3d_m_k400.py',
                '--work-dir', str(tmp_path / 'w')])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'kinetics400_train_list_videos.txt' in out
    assert 'tools/data/kinetics/build_file_list.py' in out



EXIT_WITH_WORKERS = """
import functools, multiprocessing, sys
import torch
from torch.utils.data import DataLoader
from x3d_plugin.engine.hooks import preemption
training = multiprocessing.Value('b', 1, lock=False)
loader = DataLoader(torch.arange(64), batch_size=4, num_workers=2,
                    persistent_workers=True,
                    worker_init_fn=functools.partial(
                        preemption._gate_signals_in_worker, ('SIGTERM',),
                        training, None))
# Alive until the interpreter exits, as a hook holding an iterator keeps it.
ITERATOR = iter(loader)
print(int(next(ITERATOR).sum()), flush=True)
if sys.argv[1] == 'ended':
    training.value = 0  # what PreemptionHook.restore_process_state does
"""


def test_a_process_with_live_workers_exits_once_training_ended(tmp_path):
    """PreemptionHook makes data-loader workers ignore SIGTERM while the
    main process trains; multiprocessing stops daemonic children at exit
    with SIGTERM (and then waits for them), so once training has ended
    (returned or raised) the workers stop on it again and a run whose
    workers are still alive when it ends (persistent workers kept by a
    hook, an exception) exits."""
    script = tmp_path / 'exit_with_workers.py'
    script.write_text(EXIT_WITH_WORKERS)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(script), 'ended'], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ['6']
    # While training, the same script waits on its workers.
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, str(script), 'training'], env=env,
                       capture_output=True, timeout=20)
