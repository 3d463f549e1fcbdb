"""Registries of the ``x3d_plugin`` scope.

Each registry is a child of MMAction2's registry of the same kind, so a config
reaches plugin modules as ``type='x3d_plugin.X3D'`` while MMAction2's own names
(``X3D``, ``X3DHead``, ``DecordDecode``, ``AVAMetric``...) keep resolving to
MMAction2's implementations. Nothing here registers with ``force=True``.
"""
from mmaction import registry as mmaction_registry
from mmengine.registry import Registry

SCOPE = 'x3d_plugin'


def _child(parent: Registry, location: str) -> Registry:
    """The ``x3d_plugin`` child of MMAction2's registry ``parent``, whose
    modules are registered by importing ``location``."""
    return Registry(
        parent.name, parent=parent, scope=SCOPE, locations=[location])


MODELS = _child(mmaction_registry.MODELS, 'x3d_plugin.models')
TRANSFORMS = _child(mmaction_registry.TRANSFORMS,
                    'x3d_plugin.datasets.transforms')
DATASETS = _child(mmaction_registry.DATASETS, 'x3d_plugin.datasets')
DATA_SAMPLERS = _child(mmaction_registry.DATA_SAMPLERS, 'x3d_plugin.datasets')
HOOKS = _child(mmaction_registry.HOOKS, 'x3d_plugin.engine.hooks')
LOOPS = _child(mmaction_registry.LOOPS, 'x3d_plugin.engine')
RUNNERS = _child(mmaction_registry.RUNNERS, 'x3d_plugin.engine')
PARAM_SCHEDULERS = _child(mmaction_registry.PARAM_SCHEDULERS,
                          'x3d_plugin.engine.schedulers')
METRICS = _child(mmaction_registry.METRICS, 'x3d_plugin.evaluation')
