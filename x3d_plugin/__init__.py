"""X3D for MMAction2: backbone, head, transforms, hooks and tools.

``custom_imports = dict(imports=['x3d_plugin'], allow_failed_imports=False)``
in a config registers everything under the ``x3d_plugin`` scope.
"""
from . import compat

compat.apply()

from . import models  # noqa: E402,F401  (registers the modules)
from .registry import HOOKS, MODELS, TRANSFORMS  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ['HOOKS', 'MODELS', 'TRANSFORMS', '__version__']
