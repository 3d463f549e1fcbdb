"""torch >= 2.6 loads checkpoints weights-only by default; MMEngine 0.10's
``load_from_local`` calls ``torch.load`` without ``weights_only``, and the
checkpoints its own runner writes hold ``HistoryBuffer`` objects and numpy
arrays and scalars. So ``load_from=`` or ``resume`` of any runner checkpoint
fails with "Unsupported global" for every model.

Detected: MMEngine's ``load_from_local`` refuses a small runner-like
checkpoint (written to a temporary file at import).
Change: ``torch.serialization.add_safe_globals`` (torch's public
allow-list) with exactly the types MMEngine's runner writes: ``HistoryBuffer``,
numpy's array and scalar reconstructors and dtypes, and a ``getattr`` that
allows only ``HistoryBuffer``'s public methods (which ``HistoryBuffer``
pickles by name). Weights-only loads everywhere in the process accept these
and still refuse anything else.
"""
import io
import os
import pickle
import tempfile

import torch

__all__ = ['needed', 'apply', 'runner_checkpoint_safe_globals']


def _history_buffer_getattr(owner, name):
    """The one ``getattr`` a runner checkpoint needs: ``HistoryBuffer``
    pickles its statistics methods (``min``, ``max``, ``current``, ``mean``)
    as ``getattr(HistoryBuffer, name)``. Anything else is refused, which
    keeps the weights-only guarantee."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if (owner is HistoryBuffer and not name.startswith('_')
            and callable(getattr(HistoryBuffer, name, None))):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({owner!r}, {name!r}) is not allowed in a checkpoint')


def runner_checkpoint_safe_globals() -> list:
    """The types found in checkpoints written by MMEngine's runner."""
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


def _runner_like_checkpoint() -> bytes:
    import numpy as np
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(1.0)
    stream = io.BytesIO()
    torch.save(dict(meta=dict(seed=np.int64(1)),
                    message_hub=dict(log_scalars={'loss': buffer})), stream)
    return stream.getvalue()


def needed() -> bool:
    """Whether MMEngine's local loader refuses a runner-like checkpoint."""
    from mmengine.runner.checkpoint import load_from_local
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, 'runner_like.pth')
        with open(path, 'wb') as f:
            f.write(_runner_like_checkpoint())
        try:
            load_from_local(path, map_location='cpu')
        except pickle.UnpicklingError:
            return True
    return False


def apply() -> None:
    torch.serialization.add_safe_globals(runner_checkpoint_safe_globals())
