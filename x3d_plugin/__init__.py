"""X3D for MMAction2: backbone, head, transforms, hooks and tools.

``custom_imports = dict(imports=['x3d_plugin'], allow_failed_imports=False)``
in a config registers everything under the ``x3d_plugin`` scope. Importing
registers modules and applies the shims the pinned stack needs to work at
all (:mod:`x3d_plugin.compat`, docs/compat.md); nothing else in the process
changes.
"""
from . import compat

compat.apply_stack_shims()

from . import datasets, engine, evaluation, models  # noqa: E402,F401
from .registry import (DATASETS, HOOKS, METRICS, MODELS,  # noqa: E402
                       PARAM_SCHEDULERS, RUNNERS, TRANSFORMS)
from .version import __version__  # noqa: E402

__all__ = [
    'DATASETS', 'HOOKS', 'METRICS', 'MODELS', 'PARAM_SCHEDULERS', 'RUNNERS',
    'TRANSFORMS', '__version__'
]
