"""Keep freed memory in the process (glibc ``malloc``) on CPU runs.

By default glibc returns every freed block of 128 KiB-32 MiB (the limit
adapts) and every block above 32 MiB to the operating system at once, so
the next activation or gradient of that size is fresh memory, paid again
page by page on first touch. A CPU training step allocates and frees the
same large tensors every iteration: on the 2-core AVX2 VM of
``docs/benchmarks.md`` a first touch costs about 0.6 ms per MB, and
filling a fresh 44 MB tensor took 26 ms against 4.4 ms once freed memory
is kept (``tests/utils/test_malloc.py`` checks the behaviour, the tables
in the docs the effect).

:func:`keep_freed_memory` raises glibc's mmap and trim thresholds so that
freed memory stays in the process for reuse, as PyTorch's CUDA caching
allocator does on the GPU. The process's resident memory then stays at
its peak instead of falling between iterations. ``tools/train.py``,
``tools/test.py``, ``tools/infer.py`` and the benchmark scripts call it at
start; ``X3D_PLUGIN_KEEP_FREED_MEMORY=0`` turns it off. Elsewhere (other C
libraries, macOS, Windows) it does nothing.
"""
import ctypes
import ctypes.util
import os
import sys

__all__ = ['keep_freed_memory', 'freed_memory_kept']

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_STATE = {'kept': False}


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process."""
    return _STATE['kept']


def keep_freed_memory(threshold: int = 2**31 - 1) -> bool:
    """Keeps freed blocks up to ``threshold`` bytes in the process.

    Args:
        threshold (int): Blocks up to this size come from (and go back to)
            malloc's heap instead of separate mappings; freed memory is
            returned to the system only above this much free space at the
            heap's top. Defaults to 2 GiB - 1 byte, the largest value
            glibc's ``mallopt`` takes: X3D-M's inference at batch 8 frees
            more than 1 GiB at the heap's top per pass, and with a 1 GiB
            threshold paid it again page by page (146-189 ms a clip on a
            2-core AVX-512 Xeon against 121-126 ms with this default).

    Returns:
        bool: Whether the setting was applied (glibc only, and not turned
        off by ``X3D_PLUGIN_KEEP_FREED_MEMORY=0``).
    """
    if os.environ.get('X3D_PLUGIN_KEEP_FREED_MEMORY', '1') in ('0', ''):
        return False
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, 'gnu_get_libc_version'):  # musl has no thresholds
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    threshold = min(int(threshold), 2**31 - 1)
    ok = (mallopt(_M_MMAP_THRESHOLD, threshold) == 1
          and mallopt(_M_TRIM_THRESHOLD, threshold) == 1)
    _STATE['kept'] = _STATE['kept'] or ok
    return ok
