"""The mmaction2 1.2.0 wheel lacks ``mmaction/models/localizers/drn``
(mmaction2 issue 2714), so ``import mmaction.models`` fails for everyone.

Detected: mmaction2's ``models/localizers/__init__.py`` is installed and
its ``drn`` folder is not (read from the installed files, without
importing ``mmaction.models``).
Change: two modules are added to ``sys.modules``
(``mmaction.models.localizers.drn`` and its ``drn``), whose ``DRN`` raises an
error saying why when built. Nothing existing is replaced; DRN cannot be
built with or without the shim.
"""
import importlib.util
import os
import sys
import types

PACKAGE = 'mmaction.models.localizers.drn'


def needed() -> bool:
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        return False
    for root in spec.submodule_search_locations:
        localizers = os.path.join(root, 'models', 'localizers')
        if os.path.isfile(os.path.join(localizers, '__init__.py')):
            return not os.path.isdir(os.path.join(localizers, 'drn'))
    return False


class DRN:
    """Placeholder: the mmaction2 1.2.0 wheel does not ship DRN."""

    def __init__(self, *args, **kwargs):
        raise ImportError(
            'DRN is missing from the installed mmaction2 wheel (mmaction2 '
            'issue 2714); install mmaction2 from source to use it.')


def apply() -> None:
    package = types.ModuleType(PACKAGE)
    package.__path__ = []
    module = types.ModuleType(f'{PACKAGE}.drn')
    module.DRN = DRN
    package.drn = module
    sys.modules[package.__name__] = package
    sys.modules[module.__name__] = module
