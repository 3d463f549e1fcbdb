"""What the pinned OpenMMLab stack needs to work at all, and nothing more.

``import x3d_plugin`` runs :func:`apply_stack_shims`, which first checks the
versions (:mod:`.versions`) and that an mmcv is installed, then applies each
shim below only where its broken combination is detected. A shim adds what
is missing; none replaces an attribute of MMEngine, mmcv or MMAction2.
Each module says what it changes for other models in the same process
(also listed in docs/compat.md):

* :mod:`.mmaction_drn`: the mmaction2 1.2.0 wheel lacks
  ``mmaction/models/localizers/drn``, so ``import mmaction.models`` fails.
* :mod:`.mmaction_multimodal`: mmaction2 1.2.0 imports VindLU whenever
  transformers is installed, which fails with transformers 5 (or without
  timm or einops), so ``import mmaction.models`` fails.
* :mod:`.weights_only`: torch >= 2.6 loads weights-only by default and
  MMEngine 0.10 checkpoints hold ``HistoryBuffer`` and numpy objects, so
  ``load_from``/``resume`` of a runner checkpoint fails.
* :mod:`.mmcv_lite`: mmcv-lite's ``mmcv.cnn`` warns on every import about a
  compiled op no recognizer uses.

What x3d_plugin adds to training (atomic checkpoints, verified loads,
resume, SIGTERM handling, CPU DDP) is not here: configs switch it on by
naming the plugin's runner and hooks (:mod:`x3d_plugin.engine`). MMDetection
on mmcv-lite (:mod:`.detection`) is enabled when an AVA detector of the
plugin is built, never at import.
"""
from . import mmaction_drn, mmaction_multimodal, mmcv_lite, weights_only
from .versions import (MissingMMCVError, UnsupportedVersionError,
                       check_versions, require_mmcv)

__all__ = [
    'MissingMMCVError', 'UnsupportedVersionError', 'SHIMS',
    'apply_stack_shims', 'applied_shims', 'check_versions', 'require_mmcv'
]

# Applied in this order by apply_stack_shims.
SHIMS = (mmcv_lite, mmaction_drn, mmaction_multimodal, weights_only)
_APPLIED = []


def apply_stack_shims() -> None:
    """Check the stack and apply each shim whose defect is present (once)."""
    check_versions()
    require_mmcv()
    for shim in SHIMS:
        if shim not in _APPLIED and shim.needed():
            shim.apply()
            _APPLIED.append(shim)


def applied_shims() -> list:
    """Names of the shims applied in this process, e.g.
    ``['mmcv_lite', 'mmaction_drn', 'weights_only']``."""
    return [shim.__name__.rsplit('.', 1)[-1] for shim in _APPLIED]
