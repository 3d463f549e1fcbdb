"""bf16 autocast on CPUs without bf16 arithmetic runs X3D in float32.

On a CPU without bfloat16 instructions (AVX2, or AVX-512 without BF16)
PyTorch emulates every bf16 operation: oneDNN has no bf16 convolution
there, so the 1x1x1 and stem convolutions fall back to a slow direct
path, and each elementwise operation converts to float32 and back. An
X3D-XS train step under ``torch.autocast('cpu', torch.bfloat16)`` took 2.4x
the float32 step on the 2-core AVX2 EPYC of ``docs/benchmarks.md``, so the
request can only cost time there. :func:`cpu_bf16_as_fp32` makes the
backbone and head run such a step in float32 (one warning names why), with
float32 results; where the CPU has bf16 instructions, autocast is left as
it is. ``X3D_PLUGIN_CPU_BF16=emulate`` keeps emulated bf16 (e.g. to test
numerics on such a machine).
"""
import os
import warnings
from contextlib import contextmanager

import torch

from x3d_plugin.utils.cpu import native_bf16

__all__ = ['cpu_bf16_emulated', 'cpu_bf16_as_fp32']

_WARNED = [False]


def cpu_bf16_emulated(x: torch.Tensor) -> bool:
    """Whether ``x`` is about to run under CPU bf16 autocast on a CPU
    without bf16 arithmetic (and emulation was not asked for)."""
    if x.device.type != 'cpu' or not torch.is_autocast_enabled('cpu'):
        return False
    if torch.get_autocast_dtype('cpu') != torch.bfloat16:
        return False
    if os.environ.get('X3D_PLUGIN_CPU_BF16', '') == 'emulate':
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    return not native_bf16()


@contextmanager
def cpu_bf16_as_fp32(x: torch.Tensor):
    """Context in which a module's forward runs in float32 when
    :func:`cpu_bf16_emulated` holds; yields the input to use (``x`` itself
    otherwise)."""
    if not cpu_bf16_emulated(x):
        yield x
        return
    if not _WARNED[0]:
        _WARNED[0] = True
        warnings.warn(
            'x3d_plugin: bf16 autocast on a CPU without bf16 instructions '
            '(no avx512_bf16/amx_bf16): X3D runs in float32, which is '
            'faster here than emulated bf16 (docs/benchmarks.md). Set '
            'X3D_PLUGIN_CPU_BF16=emulate to compute in bf16 anyway.',
            UserWarning,
            stacklevel=4)
    with torch.autocast('cpu', enabled=False):
        yield x.float()
