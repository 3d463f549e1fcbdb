"""`import x3d_plugin` in someone else's OpenMMLab process changes nothing
but what docs/compat.md lists: a stock MMAction2 model trains, saves,
resumes and loads as it does without the plugin."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

# Run in a fresh interpreter: records what importing the plugin changes in
# the modules of MMEngine, mmcv, MMAction2 and torch imported before it,
# and in the process (signals, exit handlers, environment, warnings).
SNAPSHOT = r'''
import atexit, inspect, json, os, re, signal, sys, warnings
import torch
import mmengine, mmengine.runner, mmengine.hooks, mmengine.dist
import mmengine.model, mmengine.fileio, mmengine.registry, mmengine.logging
import mmcv, mmcv.cnn, mmcv.transforms
import mmaction, mmaction.registry, mmaction.datasets, mmaction.evaluation
import mmaction.structures, mmaction.utils
from mmengine.fileio.backends import registry_utils

PREFIXES = ('mmengine', 'mmcv', 'mmaction', 'torch.serialization',
            'torch.distributed', 'torch.utils.data')


def attributes():
    seen = {}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(PREFIXES):
            continue
        for key, value in list(vars(module).items()):
            seen[f'{name}.{key}'] = id(value)
            if (inspect.isclass(value)
                    and getattr(value, '__module__', None) == name):
                for attr, member in list(vars(value).items()):
                    seen[f'{name}.{key}.{attr}'] = id(member)
    return seen


def process_state():
    handlers = {}
    for number in signal.valid_signals():
        try:
            handlers[str(number)] = repr(signal.getsignal(number))
        except (OSError, ValueError):
            pass
    return dict(
        signals=handlers,
        atexit=atexit._ncallbacks(),
        environ=dict(os.environ),
        warnings=[repr(f) for f in warnings.filters],
        safe_globals=sorted(
            re.sub(' at 0x[0-9a-f]+', '', repr(g))
            for g in torch.serialization.get_safe_globals()),
        backends=sorted(registry_utils.backends),
        modules=sorted(sys.modules))


before, state = attributes(), process_state()
exit_handlers = []
register = atexit.register


def recording_register(function, *args, **kwargs):
    # The module whose code registers it (importlib's frames passed over).
    frame = sys._getframe(1)
    while frame.f_globals.get('__name__', '').startswith('importlib'):
        frame = frame.f_back
    exit_handlers.append(frame.f_globals.get('__name__'))
    return register(function, *args, **kwargs)


atexit.register = recording_register
import x3d_plugin  # noqa
atexit.register = register
after, state_after = attributes(), process_state()
changed = sorted(k for k in before if k in after and after[k] != before[k])
removed = sorted(k for k in before if k not in after)
new_modules = sorted(
    m for m in set(state_after['modules']) - set(state['modules'])
    if not m.startswith('x3d_plugin') and getattr(
        sys.modules.get(m), '__file__', None) is None
    and m.startswith(('mmengine', 'mmcv', 'mmaction')))
print(json.dumps(dict(
    changed=changed, removed=removed, new_placeholder_modules=new_modules,
    signals=state['signals'] == state_after['signals'],
    atexit=state_after['atexit'] - state['atexit'],
    exit_handlers=len(exit_handlers),
    exit_handlers_by=sorted(set(exit_handlers)),
    environ=state['environ'] == state_after['environ'],
    new_warning_filters=[f for f in state_after['warnings']
                         if f not in state['warnings']],
    new_safe_globals=sorted(set(state_after['safe_globals'])
                            - set(state['safe_globals'])),
    new_backends=sorted(set(state_after['backends'])
                        - set(state['backends'])))))
'''


def test_import_changes_only_what_the_docs_list():
    proc = subprocess.run([sys.executable, '-c', SNAPSHOT],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    # No attribute of MMEngine, mmcv, MMAction2 or torch's serialization,
    # distributed and data modules (or of their classes) is replaced.
    assert found['changed'] == [] and found['removed'] == []
    assert found['signals'] and found['environ']
    # The channelwise op's torch.library registration imports
    # torch._dynamo, which registers torch's (and Triton's) own exit
    # handlers; none is the plugin's.
    assert found['atexit'] == found['exit_handlers']
    assert all(name.split('.')[0] in ('torch', 'triton')
               for name in found['exit_handlers_by']), found

    # What the stack shims add (x3d_plugin/compat), and the plugin's
    # storage backend for atomic checkpoints.
    assert found['new_placeholder_modules'] == [
        'mmaction.models.localizers.drn',
        'mmaction.models.localizers.drn.drn'
    ]
    assert len(found['new_warning_filters']) == 1
    assert 'MultiScaleDeformableAttention' in found['new_warning_filters'][0]
    from x3d_plugin.compat.weights_only import runner_checkpoint_safe_globals
    ours = {re.sub(' at 0x[0-9a-f]+', '', repr(g))
            for g in runner_checkpoint_safe_globals()}
    # Besides ours, only torch's own (registered when torch._dynamo imports).
    assert ours <= set(found['new_safe_globals'])
    assert all('torch' in g for g in set(found['new_safe_globals']) - ours)
    assert found['new_backends'] == ['x3d_plugin.atomic_local']
    docs = (ROOT / 'docs' / 'compat.md').read_text()
    for listed in ('mmaction.models.localizers.drn',
                   'MultiScaleDeformableAttention', 'add_safe_globals',
                   'x3d_plugin.atomic_local'):
        assert listed in docs, listed


# One stock MMAction2 model (the TSN of MMAction2's own Kinetics config,
# ResNet-18, 32x32 frames, random data): train 4 iterations saving every
# 2, resume from iteration 2 to 4, load the result, and load a truncated
# copy. Prints what a comparison needs.
STOCK_RUN = r'''
import hashlib, io, json, os, shutil, sys
if sys.argv[1] == 'with':
    import x3d_plugin  # noqa
else:
    # The pinned stack cannot build an MMAction2 model without these two
    # repairs; loaded by path, so that no other part of the plugin runs.
    import importlib.util
    for name in ('mmaction_drn', 'weights_only'):
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(sys.argv[2], 'x3d_plugin', 'compat',
                               name + '.py'))
        shim = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(shim)
        if shim.needed():
            shim.apply()
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmaction.structures import ActionDataSample
from mmaction.utils import register_all_modules

register_all_modules(init_default_scope=True)
import mmaction
cfg = Config.fromfile(os.path.join(
    os.path.dirname(mmaction.__file__), '.mim', 'configs', 'recognition',
    'tsn', 'tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py'))
model = cfg.model
model.backbone.update(depth=18, pretrained=None)
model.cls_head.update(in_channels=512, num_classes=3)


class Clips(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(index)
        sample = ActionDataSample().set_gt_label(index % 3)
        return dict(inputs=torch.randint(0, 255, (3, 3, 32, 32),
                                         generator=g, dtype=torch.uint8),
                    data_samples=sample)


def runner(work, **kwargs):
    return Runner(
        model=model, work_dir=work, experiment_name='run',
        train_dataloader=dict(dataset=Clips(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler',
                                           shuffle=True)),
        train_cfg=dict(by_epoch=False, max_iters=4),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01,
                                          momentum=0.9)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=2, by_epoch=False)),
        randomness=dict(seed=0), default_scope='mmaction', **kwargs)


def digest(path):
    ckpt = torch.load(path, weights_only=False)
    tensors = {**{'state_dict.' + k: v
                  for k, v in ckpt['state_dict'].items()}}
    for key, state in ckpt['optimizer']['state'].items():
        for name, value in state.items():
            tensors[f'optimizer.{key}.{name}'] = value
    return dict(
        keys=sorted(ckpt), meta=sorted(ckpt['meta']),
        message_hub=sorted(ckpt['message_hub']),
        tensors={k: hashlib.sha256(v.numpy().tobytes()).hexdigest()
                 for k, v in sorted(tensors.items())})


runner('work').train()
resumed = runner('resumed', resume=True, load_from='work/iter_2.pth')
resumed.train()
loaded = runner('loaded', load_from='resumed/iter_4.pth')
loaded.load_or_resume()
shutil.copy('work/iter_4.pth', 'damaged.pth')
with open('damaged.pth', 'r+b') as f:
    f.truncate(os.path.getsize('damaged.pth') // 2)
try:
    loaded.load_checkpoint('damaged.pth')
    damaged = 'loaded'
except Exception as err:
    damaged = f'{type(err).__name__}: {str(err).splitlines()[0]}'
print(json.dumps(dict(
    trained=digest('work/iter_4.pth'), resumed=digest('resumed/iter_4.pth'),
    loaded_equal=all(
        torch.equal(a, b) for a, b in zip(
            loaded.model.state_dict().values(),
            torch.load('resumed/iter_4.pth',
                       weights_only=False)['state_dict'].values())),
    files=sorted(f for f in os.listdir('work')
                 if f.endswith('.pth') or f == 'last_checkpoint'),
    damaged=damaged)))
'''


@pytest.mark.slow
def test_stock_mmaction2_model_runs_as_without_the_plugin(tmp_path):
    results = {}
    for mode in ('with', 'without'):
        folder = tmp_path / mode
        folder.mkdir()
        proc = subprocess.run(
            [sys.executable, '-c', STOCK_RUN, mode, str(ROOT)],
            capture_output=True, text=True, cwd=folder, timeout=600,
            env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1'))
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, theirs = results['with'], results['without']
    assert len(theirs['trained']['tensors']) > 100  # ResNet-18 + SGD state
    assert ours == theirs
    # What MMEngine does on its own, with or without the plugin: load_from
    # loads the weights, a damaged file fails in torch.
    assert theirs['loaded_equal']
    assert theirs['damaged'].startswith('RuntimeError')
    assert 'last_checkpoint' in theirs['files']
