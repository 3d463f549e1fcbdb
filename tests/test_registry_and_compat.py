"""The plugin's registry scope and the shims for the pinned stack."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from mmaction.registry import MODELS

from conftest import ROOT
from x3d_plugin import compat
from x3d_plugin.models import X3D, X3DHead


def run_python(code, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, cwd=ROOT,
                          **kwargs)


def test_import_makes_mmaction_models_importable_quietly():
    proc = run_python("""
        import x3d_plugin
        import mmaction.models
        from mmaction.models import Recognizer3D
        print('ok')
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'
    assert proc.stderr == ''


def test_missing_mmcv_names_both_packages():
    proc = run_python("""
        import sys
        sys.modules['mmcv'] = None  # as if neither mmcv nor mmcv-lite
        try:
            import x3d_plugin
        except ImportError as err:
            print(type(err).__name__, err)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('MissingMMCVError')
    assert 'pip install mmcv-lite==2.1.0' in proc.stdout
    assert 'mim install "mmcv==2.1.0"' in proc.stdout


def test_plugin_and_mmaction_x3d_coexist():
    ours = MODELS.build(dict(type='x3d_plugin.X3D', arch='xs'))
    theirs = MODELS.build(dict(type='X3D', gamma_b=2.25, gamma_d=2.2))
    assert isinstance(ours, X3D)
    assert type(theirs).__module__ == 'mmaction.models.backbones.x3d'
    head = MODELS.build(
        dict(type='x3d_plugin.X3DHead', num_classes=3, in_channels=192))
    their_head = MODELS.build(
        dict(type='X3DHead', num_classes=3, in_channels=432))
    assert isinstance(head, X3DHead)
    assert type(their_head).__module__ == 'mmaction.models.heads.x3d_head'
    assert MODELS.get('X3D') is not X3D


def test_custom_imports_is_all_a_config_needs(tmp_path):
    """A fresh interpreter: only the config's custom_imports loads the
    plugin; the recognizer mixes mmaction and x3d_plugin types."""
    cfg = tmp_path / 'mixed.py'
    cfg.write_text(textwrap.dedent("""
        custom_imports = dict(imports=['x3d_plugin'],
                              allow_failed_imports=False)
        default_scope = 'mmaction'
        model = dict(
            type='Recognizer3D',
            backbone=dict(type='x3d_plugin.X3D', arch='xs'),
            cls_head=dict(type='x3d_plugin.X3DHead', num_classes=4,
                          in_channels=192, average_clips='prob'),
            data_preprocessor=dict(type='ActionDataPreprocessor',
                                   format_shape='NCTHW'))
    """))
    proc = run_python(f"""
        import sys
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        assert 'x3d_plugin' not in sys.modules
        cfg = Config.fromfile({str(cfg)!r})
        init_default_scope('mmaction')
        from mmaction.registry import MODELS
        model = MODELS.build(cfg.model)
        import torch
        feats = model(torch.randn(1, 1, 3, 4, 32, 32), mode='tensor')
        print(type(model.backbone).__module__,
              tuple(model.cls_head(feats).shape))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        'x3d_plugin.models.backbones.x3d', '(1,', '4)']


def runner_like_checkpoint():
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(0.5)
    return dict(
        state_dict={'w': torch.ones(2)},
        meta=dict(epoch=3, iter=30, seed=np.int64(7)),
        message_hub=dict(log_scalars={'loss': buffer},
                         runtime_info={'lr': np.float64(0.1)}))


class Arbitrary:
    pass


def test_runner_checkpoints_load_weights_only(tmp_path):
    path = tmp_path / 'epoch_3.pth'
    torch.save(runner_like_checkpoint(), path)
    loaded = compat.load_local_checkpoint(str(path))
    assert loaded['meta']['epoch'] == 3
    assert loaded['message_hub']['log_scalars']['loss'].current() == 0.5


def test_arbitrary_pickles_are_refused_outside_resume(tmp_path):
    path = tmp_path / 'odd.pth'
    torch.save(dict(state_dict={}, extra=Arbitrary()), path)
    with pytest.raises(RuntimeError, match='--resume'):
        compat.load_local_checkpoint(str(path))
    # Through MMEngine's own loader, which load_from and Pretrained use.
    from mmengine.runner import CheckpointLoader
    with pytest.raises(RuntimeError, match='not loaded weights-only'):
        CheckpointLoader.load_checkpoint(str(path))
    with compat.trusted_checkpoint_loading():
        assert isinstance(
            compat.load_local_checkpoint(str(path))['extra'], Arbitrary)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        compat.load_local_checkpoint(str(tmp_path / 'missing.pth'))


def test_cpu_ddp_with_two_processes(tmp_path):
    """MMEngine's own init_dist and DDP wrapper on a CPU-only torch."""
    script = tmp_path / 'ddp.py'
    script.write_text(textwrap.dedent(f"""
        import torch, x3d_plugin
        from mmengine.dist import init_dist, get_rank, all_reduce
        from mmengine.model import MMDistributedDataParallel
        init_dist('pytorch', backend='nccl')  # as MMEngine's default config
        model = MMDistributedDataParallel(
            module=torch.nn.Linear(3, 1), device_ids=[0])
        t = torch.tensor([float(get_rank() + 1)])
        all_reduce(t)
        with open(f'{tmp_path}/rank{{get_rank()}}.txt', 'w') as f:
            f.write(f'{{torch.distributed.get_backend()}} {{float(t)}}')
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
        '--master_port=29631', str(script)
    ], capture_output=True, text=True, env=env, timeout=120)
    if torch.cuda.is_available():
        pytest.skip('the CPU path is only taken without CUDA')
    assert proc.returncode == 0, proc.stderr
    # all_reduce sums 1 + 2 over gloo on both ranks.
    for rank in (0, 1):
        assert (tmp_path / f'rank{rank}.txt').read_text() == 'gloo 3.0'
