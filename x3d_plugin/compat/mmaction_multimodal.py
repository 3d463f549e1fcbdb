"""mmaction2 1.2.0 imports its VindLU models (``mmaction.models.multimodal``)
whenever ``transformers>=4.28`` is installed, and that import fails with
transformers 5 (``modeling_utils`` no longer holds
``apply_chunking_to_forward`` and the other names VindLU's BERT imports from
it) or without ``timm`` or ``einops``, which VindLU also imports. Then
``import mmaction.models`` fails for every model, not only VindLU's.

Detected: mmaction2 is installed, ``mmaction.models.multimodal`` is not
imported yet, and the installed transformers is 4.28 or newer and either
5 or newer or installed without timm or einops (read from the installed
distributions, without importing transformers).
Change: one module, ``mmaction.models.multimodal``, is added to
``sys.modules`` (it exports nothing), and the names VindLU registers in
MMAction2's MODELS registry (``VindLUVQA``, ``VindLURetrievalMC``,
``VindLURetrieval``) are registered as placeholders that raise an error
naming the cause and the fix when built, as MMAction2 itself does when
transformers is missing. VindLU cannot be built with or without the shim.
"""
import importlib.metadata
import importlib.util
import re
import sys
import types
from typing import Optional

PACKAGE = 'mmaction.models.multimodal'
# What mmaction/models/multimodal/vindlu registers.
VINDLU = ('VindLUVQA', 'VindLURetrievalMC', 'VindLURetrieval')


def _version(dist: str) -> Optional[tuple]:
    try:
        text = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(n) for n in re.findall(r'\d+', text)[:2]) or (0, )


def blocker() -> Optional[str]:
    """Why mmaction2's VindLU import would fail here, or None where it
    would not be attempted or would work."""
    version = _version('transformers')
    if version is None or version < (4, 28):
        return None  # mmaction2 does not import VindLU
    installed = importlib.metadata.version('transformers')
    if version >= (5, ):
        return (f'transformers {installed} lacks names mmaction2 1.2.0\'s '
                'VindLU imports from transformers.modeling_utils; install '
                '"transformers>=4.28,<5" to use VindLU')
    for module in ('timm', 'einops'):
        if importlib.util.find_spec(module) is None:
            return (f'VindLU imports {module}, which is not installed beside '
                    f'transformers {installed}; pip install {module}')
    return None


def needed() -> bool:
    if PACKAGE in sys.modules or importlib.util.find_spec('mmaction') is None:
        return False
    return blocker() is not None


def _placeholder(name: str, reason: str):

    def build(*args, **kwargs):
        raise ImportError(f'{name} cannot be built: {reason}.')

    build.__name__ = build.__qualname__ = name
    return build


def apply() -> None:
    from mmaction.registry import MODELS
    reason = blocker()
    for name in VINDLU:
        MODELS.register_module(name=name, module=_placeholder(name, reason))
    package = types.ModuleType(PACKAGE)
    package.__path__ = []
    package.__all__ = []
    sys.modules[PACKAGE] = package
