"""Shims for the pinned OpenMMLab stack, applied once on ``import x3d_plugin``.

Every work-around for a defect of a pinned dependency lives here, so a user
of the plugin never meets the defect and a maintainer finds all of them in one
file. Each shim is idempotent and leaves a working upstream alone.

1. The mmaction2 1.2.0 wheel lacks ``mmaction/models/localizers/drn`` (mmaction2
   issue 2714), so ``import mmaction.models`` fails. A placeholder module is
   installed for the missing package only when it really is missing; building
   ``DRN`` then fails with a message saying why.
2. torch >= 2.6 loads checkpoints with ``weights_only=True``; MMEngine 0.10.7
   calls ``torch.load`` without the argument, so loading a checkpoint written by
   its own runner fails on ``HistoryBuffer``. Local checkpoints are now loaded
   weights-only with an allow-list of exactly the types MMEngine's runner writes
   (``HistoryBuffer`` and numpy arrays/scalars), which covers pretrained weights,
   converted checkpoints and ``load_from=`` of a runner checkpoint. Only
   ``Runner.resume`` -- which reads back the user's own training state, where
   hooks may have stored arbitrary objects -- loads with full unpickling.
3. MMEngine's ``_init_dist_pytorch`` calls ``torch.cuda.set_device`` even on a
   CPU-only torch, and its DDP wrapper passes ``device_ids=[local_rank]``,
   which DDP refuses for CPU modules. Without CUDA the process group uses
   ``gloo`` and DDP gets ``device_ids=None``; with CUDA nothing changes.
4. mmcv-lite's ``mmcv.cnn`` warns on import about a compiled op it lacks and
   that no recognizer here uses; that one warning is filtered.
5. ``mmcv`` is not an install requirement (``mmcv`` and ``mmcv-lite`` both
   provide it and clash when both are installed); when neither is there,
   ``import x3d_plugin`` fails with :class:`MissingMMCVError`, which says
   which to install.
"""
import contextlib
import contextvars
import importlib.util
import os.path as osp
import pickle
import sys
import types
import warnings

import torch

_APPLIED = False
# True while Runner.resume runs: the checkpoint is the runner's own output.
_TRUSTED_LOAD = contextvars.ContextVar('x3d_plugin_trusted_load', default=False)


def _install_drn_placeholder():
    try:
        spec = importlib.util.find_spec('mmaction.models.localizers.drn')
    except ModuleNotFoundError:
        spec = None
    if spec is not None or 'mmaction.models.localizers.drn.drn' in sys.modules:
        return

    class DRN:  # noqa: D401 - a placeholder, not a model
        """Placeholder: the mmaction2 1.2.0 wheel does not ship DRN."""

        def __init__(self, *args, **kwargs):
            raise ImportError(
                'DRN is missing from the installed mmaction2 wheel '
                '(mmaction2 issue 2714); install mmaction2 from source to '
                'use it.')

    package = types.ModuleType('mmaction.models.localizers.drn')
    package.__path__ = []
    module = types.ModuleType('mmaction.models.localizers.drn.drn')
    module.DRN = DRN
    package.drn = module
    sys.modules[package.__name__] = package
    sys.modules[module.__name__] = module


def _history_buffer_getattr(owner, name):
    """The one ``getattr`` a runner checkpoint needs: HistoryBuffer pickles
    its statistics methods (``min``, ``max``, ``current``, ``mean``) as
    ``getattr(HistoryBuffer, name)``. Anything else is refused, which keeps
    the weights-only guarantee."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if (owner is HistoryBuffer and not name.startswith('_')
            and callable(getattr(HistoryBuffer, name, None))):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({owner!r}, {name!r}) is not allowed in a checkpoint')


def _runner_checkpoint_safe_globals():
    """Types found in checkpoints written by MMEngine's runner."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in 'bBhHiIlLqQefdgFDG?']
    return [
        HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype,
        *dtype_classes, (_history_buffer_getattr, 'builtins.getattr')
    ]


def load_local_checkpoint(filename, map_location=None):
    """Load a local checkpoint the way :mod:`x3d_plugin` allows (see above).

    Args:
        filename (str): Path of the checkpoint.
        map_location (str | callable, optional): As for :func:`torch.load`.

    Returns:
        dict: The loaded object.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(
            f'checkpoint {filename!r} does not exist; check the path given '
            'to load_from / --checkpoint / init_cfg.checkpoint.')
    if _TRUSTED_LOAD.get():
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    try:
        with torch.serialization.safe_globals(
                _runner_checkpoint_safe_globals()):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(
            f'{filename!r} holds objects other than tensors and MMEngine '
            'training state, so it is not loaded weights-only. If you wrote '
            'it with this runner, continue it with --resume; if it is a '
            'PySlowFast, PyTorchVideo or MMAction2 X3D checkpoint, convert '
            'it with tools/convert_checkpoint.py first.\n'
            f'torch said: {err}') from err


def _patch_checkpoint_loader():
    from mmengine.runner import Runner
    from mmengine.runner.checkpoint import CheckpointLoader

    # The '' prefix is MMEngine's local-file scheme; replacing its entry keeps
    # the scheme order that CheckpointLoader sorted at registration.
    CheckpointLoader._schemes[''] = load_local_checkpoint

    original_resume = Runner.resume
    if getattr(original_resume, '_x3d_plugin_patched', False):
        return

    def resume(self, *args, **kwargs):
        with trusted_checkpoint_loading():
            return original_resume(self, *args, **kwargs)

    resume._x3d_plugin_patched = True
    resume.__doc__ = original_resume.__doc__
    Runner.resume = resume


@contextlib.contextmanager
def trusted_checkpoint_loading():
    """Load local checkpoints with full unpickling inside this block.

    For checkpoints that the caller itself wrote, like ``Runner.resume`` does.
    """
    token = _TRUSTED_LOAD.set(True)
    try:
        yield
    finally:
        _TRUSTED_LOAD.reset(token)


def _patch_cpu_distributed():
    import torch.distributed as torch_dist
    from mmengine.dist import utils as dist_utils
    from mmengine.model.wrappers import MMDistributedDataParallel

    original_init_dist = dist_utils._init_dist_pytorch
    if not getattr(original_init_dist, '_x3d_plugin_patched', False):

        def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
            if torch.cuda.is_available() or init_backend != 'torch':
                return original_init_dist(backend, init_backend, **kwargs)
            if backend == 'nccl':
                backend = 'gloo'  # NCCL needs CUDA; gloo runs on CPU.
            torch_dist.init_process_group(backend=backend, **kwargs)

        _init_dist_pytorch._x3d_plugin_patched = True
        dist_utils._init_dist_pytorch = _init_dist_pytorch

    original_ddp_init = MMDistributedDataParallel.__init__
    if not getattr(original_ddp_init, '_x3d_plugin_patched', False):

        def __init__(self, module, detect_anomalous_params=False, **kwargs):
            on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
            if on_cpu and not torch.cuda.is_available():
                kwargs['device_ids'] = None
                kwargs.pop('output_device', None)
            original_ddp_init(self, module, detect_anomalous_params, **kwargs)

        __init__._x3d_plugin_patched = True
        MMDistributedDataParallel.__init__ = __init__


def _silence_mmcv_lite_warning():
    # mmcv-lite has no compiled ops; mmcv.cnn warns about one of them on every
    # import although nothing in MMAction2's recognizers uses it.
    warnings.filterwarnings(
        'ignore',
        message='Fail to import ``MultiScaleDeformableAttention``',
        category=UserWarning)


class MissingMMCVError(ImportError):
    """Neither ``mmcv`` nor ``mmcv-lite`` is installed."""


def _require_mmcv():
    try:
        import mmcv  # noqa: F401
    except ImportError as err:
        raise MissingMMCVError(
            'x3d_plugin needs mmcv (MMAction2 1.2.0 takes 2.0.0rc4 <= mmcv < '
            '2.2.0) and found none. Install one of them: '
            '`pip install mmcv-lite==2.1.0` (pure Python, enough for '
            'recognition) or, for compiled ops (e.g. RoIAlign), '
            '`mim install "mmcv==2.1.0"`.') from err


def apply():
    """Apply every shim once."""
    global _APPLIED
    if _APPLIED:
        return
    _require_mmcv()
    _silence_mmcv_lite_warning()
    _install_drn_placeholder()
    _patch_checkpoint_loader()
    _patch_cpu_distributed()
    _APPLIED = True
