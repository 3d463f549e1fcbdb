"""The plugin's registry scope, and the shims for the pinned stack: each
repairs a defect that the pinned stack shows without it."""
import importlib.util
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
from x3d_plugin.utils import checkpoint_file
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


def test_shims_applied_on_the_pinned_stack():
    assert compat.applied_shims() == ['mmcv_lite', 'mmaction_drn',
                                      'weights_only']
    compat.apply_stack_shims()  # twice is once
    assert compat.applied_shims() == ['mmcv_lite', 'mmaction_drn',
                                      'weights_only']


# Loads the shim modules by path: `import x3d_plugin.compat` would import
# the whole plugin first.
WITHOUT_PLUGIN = """
    import importlib.util, sys
    def shim(name):
        spec = importlib.util.spec_from_file_location(
            name, {root!r} + '/x3d_plugin/compat/' + name + '.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
"""


def test_pinned_stack_fails_without_the_drn_shim():
    code = WITHOUT_PLUGIN.format(root=str(ROOT)) + """
    drn = shim('mmaction_drn')
    print('needed', drn.needed())
    try:
        import mmaction.models
    except ModuleNotFoundError as err:
        print('fails:', err.name)
    """
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split('\n')[:2] == [
        'needed True', 'fails: mmaction.models.localizers.drn']
    proc = run_python(code.replace("print('needed', drn.needed())",
                                   "drn.apply()"))
    assert proc.returncode == 0, proc.stderr
    assert 'fails' not in proc.stdout


def fake_transformers(folder, version):
    """An installed-looking transformers ``version`` in ``folder`` that holds
    none of what mmaction2's VindLU imports from it."""
    package = folder / 'transformers'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text(f'__version__ = {version!r}\n')
    (package / 'modeling_utils.py').write_text('class PreTrainedModel:\n'
                                               '    pass\n')
    info = folder / f'transformers-{version}.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\n'
                                   f'Name: transformers\nVersion: {version}\n')


@pytest.mark.parametrize('version, reason', [
    ('5.0.0', 'transformers 5.0.0 lacks names'),
    ('4.40.1', 'VindLU imports timm, which is not installed'),
    ('4.27.0', None),
])
def test_an_unimportable_transformers_breaks_mmaction_without_the_shim(
        tmp_path, version, reason):
    if reason and 'timm' in reason and importlib.util.find_spec('timm'):
        pytest.skip('timm is installed here')
    fake_transformers(tmp_path, version)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(tmp_path),
                                                       str(ROOT))))
    code = WITHOUT_PLUGIN.format(root=str(ROOT)) + """
    shim('mmaction_drn').apply()
    multimodal = shim('mmaction_multimodal')
    print('needed', multimodal.needed())
    print('reason', multimodal.blocker())
    try:
        import mmaction.models
        print('imports')
    except ImportError as err:
        print('fails:', (err.name or str(err)).split('.')[0])
    """
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    needed, why, result = proc.stdout.splitlines()[:3]
    if reason is None:
        # mmaction2 does not import VindLU below transformers 4.28.
        assert (needed, why, result) == ('needed False', 'reason None',
                                         'imports')
        return
    assert needed == 'needed True' and reason in why
    assert result == 'fails: transformers'

    proc = subprocess.run([sys.executable, '-c', textwrap.dedent("""
        import x3d_plugin
        from x3d_plugin import compat
        import mmaction.models
        from mmaction.registry import MODELS
        from mmaction.models import Recognizer3D
        print(compat.applied_shims())
        try:
            MODELS.build(dict(type='VindLUVQA'))
        except ImportError as err:
            print(err)
    """)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    applied, error = proc.stdout.splitlines()[:2]
    assert 'mmaction_multimodal' in applied
    assert error.startswith('VindLUVQA cannot be built: ') and reason in error


def test_pinned_stack_fails_without_the_weights_only_shim(tmp_path):
    path = tmp_path / 'iter_30.pth'
    torch.save(runner_like_checkpoint(), path)
    code = WITHOUT_PLUGIN.format(root=str(ROOT)) + f"""
    from mmengine.runner import CheckpointLoader
    weights_only = shim('weights_only')
    print('needed', weights_only.needed())
    if len(sys.argv) > 1:
        weights_only.apply()
    try:
        ckpt = CheckpointLoader.load_checkpoint({str(path)!r})
        print('loaded', ckpt['meta']['epoch'])
    except Exception as err:
        print('fails:', type(err).__name__)
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    without = subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                             capture_output=True, text=True, env=env)
    lines = [x for x in without.stdout.splitlines() if 'mmengine' not in x]
    assert lines == ['needed True', 'fails: UnpicklingError']
    with_shim = subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code), 'apply'],
        capture_output=True, text=True, env=env)
    lines = [x for x in with_shim.stdout.splitlines() if 'mmengine' not in x]
    assert lines == ['needed True', 'loaded 3'], with_shim.stderr


def test_runner_checkpoints_load_weights_only(tmp_path):
    path = tmp_path / 'epoch_3.pth'
    torch.save(runner_like_checkpoint(), path)
    loaded = checkpoint_file.load_local_checkpoint(str(path))
    assert loaded['meta']['epoch'] == 3
    assert loaded['message_hub']['log_scalars']['loss'].current() == 0.5
    # torch's own default load too (the weights_only shim).
    assert torch.load(path)['meta']['seed'] == 7


def test_the_allow_list_admits_nothing_else(tmp_path):
    import pickle
    path = tmp_path / 'odd.pth'
    torch.save(dict(state_dict={}, extra=Arbitrary()), path)
    with pytest.raises(RuntimeError, match='--resume'):
        checkpoint_file.load_local_checkpoint(str(path))
    # MMEngine's own loader is MMEngine's: torch's weights-only refusal.
    from mmengine.runner import CheckpointLoader
    with pytest.raises(pickle.UnpicklingError):
        CheckpointLoader.load_checkpoint(str(path))
    loaded = checkpoint_file.load_local_checkpoint(str(path), trusted=True)
    assert isinstance(loaded['extra'], Arbitrary)
    # The getattr allowed for HistoryBuffer allows nothing more.
    from x3d_plugin.compat.weights_only import _history_buffer_getattr
    with pytest.raises(pickle.UnpicklingError, match='not allowed'):
        _history_buffer_getattr(os, 'system')


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        checkpoint_file.load_local_checkpoint(str(tmp_path / 'missing.pth'))


@pytest.mark.parametrize('installed,needed', [
    ({'torch': '2.5.1'}, 'torch>=2.6'),
    ({'mmengine': '0.10.4'}, 'mmengine>=0.10.7,<0.11'),
    ({'mmengine': '0.11.0'}, 'mmengine>=0.10.7,<0.11'),
    ({'mmaction2': '1.1.0'}, 'mmaction2>=1.2.0,<1.3'),
])
def test_an_unsupported_version_is_one_line(installed, needed):
    versions = dict(torch='2.13.0+cpu', mmengine='0.10.7', mmaction2='1.2.0')
    compat.check_versions(versions)  # the pinned stack passes
    versions.update(installed)
    with pytest.raises(compat.UnsupportedVersionError) as info:
        compat.check_versions(versions)
    message = str(info.value)
    assert '\n' not in message
    assert needed in message and list(installed.values())[0] in message


def test_setup_cfg_states_the_same_floors():
    text = (ROOT / 'setup.cfg').read_text()
    for name, (oldest, first_unsupported) in (
            compat.versions.MINIMUM_VERSIONS.items()):
        spec = f'{name}>=' + '.'.join(map(str, oldest))
        if first_unsupported:
            spec += ',<' + '.'.join(map(str, first_unsupported))
        assert spec in text, spec


def test_an_old_torch_stops_the_import():
    proc = run_python("""
        from importlib import metadata
        real = metadata.version
        metadata.version = lambda name: ('2.4.0' if name == 'torch'
                                         else real(name))
        try:
            import x3d_plugin
        except ImportError as err:
            print(type(err).__name__, err)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('UnsupportedVersionError x3d_plugin needs '
                                  'torch>=2.6 and found torch 2.4.0')


# The model of the child scripts below (MMEngine's BaseModel over one
# Linear(3, 1)): a batch is a list of 3-vectors; mode='loss' gives a loss.
TOY_MODEL = textwrap.indent(textwrap.dedent('''
    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 1)
        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.fc(torch.stack(inputs))
            return dict(loss=out.square().mean()) if mode == 'loss' else out
''').strip(), ' ' * 8).lstrip()


def test_cpu_ddp_through_the_plugin_runner(tmp_path):
    """X3DRunner with launcher='pytorch' on a CPU-only torch: a gloo process
    group (the config asks for nccl, as MMEngine's default does) and the DDP
    wrapper without device ids."""
    script = tmp_path / 'ddp.py'
    script.write_text(textwrap.dedent(f"""
        import torch, x3d_plugin
        from mmengine.dist import get_rank, all_reduce
        from mmengine.model import BaseModel, MMDistributedDataParallel
        from x3d_plugin.engine import X3DRunner

        {TOY_MODEL}

        runner = X3DRunner(model=Toy(), work_dir={str(tmp_path)!r},
                           launcher='pytorch',
                           env_cfg=dict(dist_cfg=dict(backend='nccl')))
        assert isinstance(runner.model, MMDistributedDataParallel)
        assert runner.model.device_ids is None
        t = torch.tensor([float(get_rank() + 1)])
        all_reduce(t)
        with open(f'{tmp_path}/rank{{get_rank()}}.txt', 'w') as f:
            f.write(f'{{torch.distributed.get_backend()}} {{float(t)}}')
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    if torch.cuda.is_available():
        pytest.skip('the CPU path is only taken without CUDA')
    proc = subprocess.run([
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
        '--master_port=29631', str(script)
    ], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # all_reduce sums 1 + 2 over gloo on both ranks.
    for rank in (0, 1):
        assert (tmp_path / f'rank{rank}.txt').read_text() == 'gloo 3.0'


def test_runner_stops_persistent_workers_after_training(tmp_path):
    """After train() X3DRunner has stopped the loaders' persistent workers:
    none is left for the interpreter's exit to kill with SIGTERM, which
    PyTorch reports as "DataLoader worker ... is killed by signal:
    Terminated" after a run that went well."""
    script = tmp_path / 'train.py'
    script.write_text(textwrap.dedent(f"""
        import multiprocessing, torch, x3d_plugin
        from mmengine.model import BaseModel
        from x3d_plugin.engine import X3DRunner

        {TOY_MODEL}

        class Data(torch.utils.data.Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                return dict(inputs=torch.full((3, ), float(i)))

        runner = X3DRunner(
            model=Toy(), work_dir={str(tmp_path / 'work')!r},
            train_dataloader=dict(
                dataset=Data(), batch_size=2, num_workers=2,
                persistent_workers=True,
                sampler=dict(type='DefaultSampler', shuffle=False)),
            train_cfg=dict(by_epoch=True, max_epochs=2),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
            default_hooks=dict(checkpoint=None))
        runner.train()
        loader = runner.train_dataloader
        print('iterator', loader._iterator,
              'children', len(multiprocessing.active_children()))
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'iterator None children 0' in proc.stdout, proc.stdout[-2000:]
    assert 'killed by signal' not in proc.stderr, proc.stderr[-3000:]
