"""Whether the GPU path can run the Triton kernels
(:mod:`x3d_plugin.ops.triton_channelwise`).

Triton is optional: it is imported when the first CUDA tensor reaches the
op, and without it (or without CUDA) the GPU path is cuDNN's ``F.conv3d``.
``X3D_PLUGIN_TRITON=1`` turns the Triton kernels on; they are off by
default: they are tested under Triton's CPU interpreter and compiled for
sm_90, but no GPU has run or timed them yet
(``tools/benchmark/gpu_tables.sh`` does both).
"""
import os
import threading
import warnings
from typing import Optional

import torch

__all__ = ['triton_channelwise_available', 'triton_error', 'triton_kernels']

_LOCK = threading.Lock()
_TRITON = {'ok': None, 'error': None, 'warned': False}


def triton_kernels():
    """The Triton module (imports triton; call only once it is known to
    import, see :func:`triton_channelwise_available`)."""
    from x3d_plugin.ops import triton_channelwise
    return triton_channelwise


@torch.compiler.assume_constant_result
def triton_channelwise_available() -> bool:
    """Whether the GPU path can run the Triton kernels: CUDA is available,
    ``X3D_PLUGIN_TRITON=1`` is set and ``triton`` imports.

    The first call imports triton. Triton not installed is a normal setup
    (the GPU path is then cuDNN's) and is silent; any other import failure
    warns once.
    """
    if _TRITON['ok'] is not None:
        return _TRITON['ok']
    with _LOCK:
        if _TRITON['ok'] is not None:
            return _TRITON['ok']
        if not torch.cuda.is_available():
            _TRITON['error'] = 'CUDA is not available'
        elif os.environ.get('X3D_PLUGIN_TRITON', '') in ('', '0'):
            _TRITON['error'] = ('off by default until timed on a GPU; set '
                                'X3D_PLUGIN_TRITON=1 to use it')
        else:
            try:
                triton_kernels()
            except ModuleNotFoundError as exc:
                _TRITON['error'] = (f'{exc}; fix: pip install triton (or '
                                    'the version your torch was built with)')
            except Exception as exc:  # never crash: fall back to cuDNN
                _TRITON['error'] = f'{type(exc).__name__}: {exc}'
                if not _TRITON['warned']:
                    _TRITON['warned'] = True
                    warnings.warn(
                        'x3d_plugin: the Triton channelwise conv3d kernels '
                        f'could not be loaded ({_TRITON["error"]}); the GPU '
                        'path falls back to cuDNN. Fix: reinstall triton '
                        'or unset X3D_PLUGIN_TRITON to silence this.',
                        UserWarning,
                        stacklevel=3)
        _TRITON['ok'] = _TRITON['error'] is None
        return _TRITON['ok']


def triton_error() -> Optional[str]:
    """Why the Triton kernels are unavailable (None if they loaded or were
    not tried yet)."""
    return _TRITON['error']
