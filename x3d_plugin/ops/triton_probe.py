"""Whether the GPU path can run the Triton kernels
(:mod:`x3d_plugin.ops.triton_channelwise`).

On CUDA tensors the channelwise convolution runs the Triton kernels by
default; ``X3D_PLUGIN_TRITON=0`` turns them off (then cuDNN's ``F.conv3d``
runs). Triton is imported when the first CUDA tensor reaches the op. On an
H200 the X3D-M train step (batch 16, channels-last) ran 2.4x (fp32) and
6.2x (bf16) faster with them than with cuDNN's channelwise convolution,
whose channels-last kernels take 1.7x-4.7x (fp32) and 6x-31x (bf16) the
time of its NCDHW ones at the 3x3x3 layers (docs/benchmarks.md, GPU
section), so a CUDA machine without a working Triton gets one warning
saying so.
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
    ``X3D_PLUGIN_TRITON`` is not ``0`` and ``triton`` imports.

    The first call imports triton. Where it does not import, the GPU path
    is cuDNN's and one warning names the cause and the fix.
    """
    if _TRITON['ok'] is not None:
        return _TRITON['ok']
    with _LOCK:
        if _TRITON['ok'] is not None:
            return _TRITON['ok']
        if not torch.cuda.is_available():
            _TRITON['error'] = 'CUDA is not available'
        elif os.environ.get('X3D_PLUGIN_TRITON', '') == '0':
            _TRITON['error'] = 'turned off by X3D_PLUGIN_TRITON=0'
        else:
            try:
                triton_kernels()
            except ModuleNotFoundError as exc:
                _TRITON['error'] = (f'{exc}; fix: pip install triton (the '
                                    'version your torch was built with)')
            except Exception as exc:  # never crash: fall back to cuDNN
                _TRITON['error'] = (f'{type(exc).__name__}: {exc}; fix: '
                                    'reinstall triton (the version your '
                                    'torch was built with)')
            if _TRITON['error'] is not None and not _TRITON['warned']:
                _TRITON['warned'] = True
                warnings.warn(
                    'x3d_plugin: the Triton channelwise conv3d kernels '
                    f'cannot run ({_TRITON["error"]}). The channelwise '
                    'convolutions on CUDA fall back to cuDNN, whose '
                    'channels-last kernels are several times slower '
                    '(docs/benchmarks.md). Set X3D_PLUGIN_TRITON=0 to use '
                    'cuDNN without this warning.',
                    UserWarning,
                    stacklevel=3)
        _TRITON['ok'] = _TRITON['error'] is None
        return _TRITON['ok']


def triton_error() -> Optional[str]:
    """Why the Triton kernels are unavailable (None if they loaded or were
    not tried yet)."""
    return _TRITON['error']
