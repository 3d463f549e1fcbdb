"""Registries of the ``x3d_plugin`` scope.

Each registry is a child of MMAction2's registry of the same kind, so a config
reaches plugin modules as ``type='x3d_plugin.X3D'`` while MMAction2's own names
(``X3D``, ``X3DHead``, ``DecordDecode``...) keep resolving to MMAction2's
implementations. Nothing here registers with ``force=True``.
"""
from mmaction.registry import DATA_SAMPLERS as MMACTION_DATA_SAMPLERS
from mmaction.registry import DATASETS as MMACTION_DATASETS
from mmaction.registry import HOOKS as MMACTION_HOOKS
from mmaction.registry import LOOPS as MMACTION_LOOPS
from mmaction.registry import METRICS as MMACTION_METRICS
from mmaction.registry import MODELS as MMACTION_MODELS
from mmaction.registry import PARAM_SCHEDULERS as MMACTION_PARAM_SCHEDULERS
from mmaction.registry import RUNNERS as MMACTION_RUNNERS
from mmaction.registry import TRANSFORMS as MMACTION_TRANSFORMS
from mmengine.registry import Registry

SCOPE = 'x3d_plugin'

MODELS = Registry(
    'model',
    parent=MMACTION_MODELS,
    scope=SCOPE,
    locations=['x3d_plugin.models'])
TRANSFORMS = Registry(
    'transform',
    parent=MMACTION_TRANSFORMS,
    scope=SCOPE,
    locations=['x3d_plugin.datasets.transforms'])
HOOKS = Registry(
    'hook',
    parent=MMACTION_HOOKS,
    scope=SCOPE,
    locations=['x3d_plugin.engine.hooks'])
DATASETS = Registry(
    'dataset',
    parent=MMACTION_DATASETS,
    scope=SCOPE,
    locations=['x3d_plugin.datasets'])
PARAM_SCHEDULERS = Registry(
    'parameter scheduler',
    parent=MMACTION_PARAM_SCHEDULERS,
    scope=SCOPE,
    locations=['x3d_plugin.engine.schedulers'])
RUNNERS = Registry(
    'runner', parent=MMACTION_RUNNERS, scope=SCOPE,
    locations=['x3d_plugin.engine'])
METRICS = Registry(
    'metric',
    parent=MMACTION_METRICS,
    scope=SCOPE,
    locations=['x3d_plugin.evaluation'])
DATA_SAMPLERS = Registry(
    'data sampler',
    parent=MMACTION_DATA_SAMPLERS,
    scope=SCOPE,
    locations=['x3d_plugin.datasets'])
LOOPS = Registry(
    'loop', parent=MMACTION_LOOPS, scope=SCOPE,
    locations=['x3d_plugin.engine'])
