"""X3D for MMAction2: backbone, head, transforms, hooks and tools.

``custom_imports = dict(imports=['x3d_plugin'], allow_failed_imports=False)``
in a config registers everything under the ``x3d_plugin`` scope.
"""
from . import compat

compat.apply()

from . import datasets, engine, models  # noqa: E402,F401  (registration)
from .registry import (DATASETS, HOOKS, MODELS,  # noqa: E402
                       PARAM_SCHEDULERS, TRANSFORMS)
from .version import __version__  # noqa: E402

__all__ = [
    'DATASETS', 'HOOKS', 'MODELS', 'PARAM_SCHEDULERS', 'TRANSFORMS',
    '__version__'
]
