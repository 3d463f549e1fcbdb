"""Build, cache and load the C++ channelwise conv3d kernels for CPU.

The extension (``csrc/channelwise_conv3d.cpp``) is compiled with
``torch.utils.cpp_extension.load`` (needs a C++ compiler and ``ninja``) on
first use, once per instruction-set class of the CPU, and cached on disk:

=============== ======================================================
class           build
=============== ======================================================
``avx512_bf16`` as ``avx512``, and bf16 rounding by ``vcvtneps2bf16``;
                CPUs with ``avx512_bf16``
``avx512``      16 float lanes where :func:`wide_lanes` holds (channel
                count a multiple of 16; bf16 also from 32 channels
                on), 8 elsewhere (AVX-512 F/BW/DQ/VL); CPUs with those
``avx2``        8 float lanes (AVX2 + FMA + F16C)
``generic``     8 float lanes, no ``-m`` flags (what the compiler
                targets by default; any other CPU)
=============== ======================================================

The best class the CPU has is used; ``X3D_PLUGIN_CPU_ISA`` names another
one the CPU also has (e.g. ``avx2`` on an AVX-512 CPU, to test or time
that build). Each build registers its ops in its own namespace,
``torch.ops.x3d_plugin_cpu_<class>``, so two builds can be loaded side by
side in one process (:func:`kernels`). The AVX-512 builds hold two sets
of kernels, of 8 and of 16 lanes (``csrc/channelwise_conv3d_l16.cpp``,
namespace suffix ``_l16``), chosen per call by :func:`wide_lanes`.

The cache root is ``$X3D_PLUGIN_CACHE`` if set, else
``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/x3d_plugin/extensions``; the
build directory's name holds a hash of the source, the compiler flags, the
torch and Python versions and the CPU model and flags, so a cache is never
reused by another CPU or torch. Concurrent first uses (e.g. the ranks of a
distributed job) share the build through cpp_extension's file lock. Later
processes load the cached library directly (milliseconds).

If the build fails (no compiler, no ninja, compile error) one
``UserWarning`` names the cause and the fix, and the callers fall back to
``F.conv3d``. ``X3D_PLUGIN_NO_EXT=1`` never builds or loads it;
``X3D_PLUGIN_EXT_VERBOSE=1`` shows the compiler's output.
"""
import functools
import hashlib
import os
import platform
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence

import torch

from x3d_plugin.utils.cpu import cpu_info
from x3d_plugin.utils.fileio import write_file_atomically

__all__ = [
    'ISA_CLASSES', 'cpu_isa', 'cpu_isas', 'cache_root', 'kernels',
    'fast_channelwise_available', 'extension_error', 'active_isa',
    'use_cpu_isa'
]

SOURCE = Path(__file__).resolve().parent / 'csrc' / 'channelwise_conv3d.cpp'
SOURCE_L16 = SOURCE.with_name('channelwise_conv3d_l16.cpp')
# Batch normalisation (+ ReLU, + residual) of channels-last tensors, ops in
# the same namespace as the 8-lane kernels (x3d_plugin.ops.batch_norm).
SOURCE_BN = SOURCE.with_name('batch_norm_cl.cpp')
# Best first.
ISA_CLASSES = ('avx512_bf16', 'avx512', 'avx2', 'generic')
_AVX512 = {'avx512f', 'avx512bw', 'avx512dq', 'avx512vl', 'avx2', 'fma'}
_ISA_FLAGS = {
    'avx512_bf16': _AVX512 | {'avx512_bf16'},
    'avx512': _AVX512,
    'avx2': {'avx2', 'fma'},
    'generic': set(),
}
_LOCK = threading.Lock()
# The default build: loaded (None = not tried), why not, warned once.
_STATE = {'loaded': None, 'error': None, 'warned': False}
# class -> (8-lane, 16-lane or None) torch.ops namespaces of a loaded build.
_LOADED = {}
# The class whose build the ops call (None = not chosen yet).
_ACTIVE = [None]


def cpu_isas(flags: Optional[Sequence[str]] = None) -> tuple:
    """The build classes (best first) a CPU with ``flags`` (default: this
    CPU's, from /proc/cpuinfo) can run."""
    if flags is None:
        # Asked at every channelwise forward (the forward policy): once.
        return _this_cpu_isas()
    flags = set(flags)
    x86 = platform.machine().lower() in ('x86_64', 'amd64')
    return tuple(c for c in ISA_CLASSES
                 if c == 'generic' or (x86 and _ISA_FLAGS[c] <= flags))


@functools.lru_cache(maxsize=None)
def _this_cpu_isas() -> tuple:
    return cpu_isas(cpu_info()[1])


def cpu_isa() -> str:
    """The build class the kernels use on this CPU: the best it has, or
    ``$X3D_PLUGIN_CPU_ISA`` when set.

    Raises:
        ValueError: ``X3D_PLUGIN_CPU_ISA`` names an unknown class or one
            this CPU lacks.
    """
    have = cpu_isas()
    want = os.environ.get('X3D_PLUGIN_CPU_ISA', '').strip()
    if not want:
        return have[0]
    if want not in ISA_CLASSES:
        raise ValueError(f'X3D_PLUGIN_CPU_ISA={want!r} is not a build '
                         f'class; use one of {", ".join(ISA_CLASSES)}')
    if want not in have:
        raise ValueError(f'X3D_PLUGIN_CPU_ISA={want!r}: this CPU has only '
                         f'{", ".join(have)}; unset it or pick one of those')
    return want


def namespace(isa: str) -> str:
    """The ``torch.ops`` namespace of the build of class ``isa``."""
    return f'x3d_plugin_cpu_{isa}'


def compile_flags(isa: str) -> list:
    """Compiler flags of the build of class ``isa``."""
    # -fno-tree-loop-distribute-patterns: GCC otherwise turns the zeroing of
    # the accumulator arrays into a memset (`rep stos`) on the stack.
    # -fno-trapping-math: without it GCC does not vectorise a loop with a
    # float comparison (the clamp in batch_norm_cl.cpp's exp) unless it
    # has AVX-512's masks; values are unchanged (no reassociation).
    cflags = ['-O3', '-ffp-contract=fast', '-fno-math-errno', '-Wno-psabi',
              '-fno-trapping-math', '-fno-tree-loop-distribute-patterns',
              f'-DX3D_CW_NS={namespace(isa)}']
    if isa in ('avx2', 'avx512', 'avx512_bf16'):
        cflags += ['-mavx2', '-mfma', '-mf16c']
    if isa in ('avx512', 'avx512_bf16'):
        cflags += ['-mavx512f', '-mavx512bw', '-mavx512dq', '-mavx512vl']
    if isa == 'avx512_bf16':
        cflags.append('-mavx512bf16')
    if torch._C.has_openmp and platform.system() == 'Linux':
        # at::parallel_for is an OpenMP pragma compiled into the extension:
        # without -fopenmp it runs on one thread. The extension then uses
        # the libgomp.so.1 that torch has already loaded (same soname), so
        # there is one thread pool.
        cflags.append('-fopenmp')
    return cflags


def sources(isa: str) -> list:
    """The C++ files of the build of class ``isa``."""
    if isa in ('avx512', 'avx512_bf16'):
        return [str(SOURCE), str(SOURCE_L16), str(SOURCE_BN)]
    return [str(SOURCE), str(SOURCE_BN)]


def _namespaces(isa: str) -> tuple:
    """(8-lane ops, 16-lane ops or None) of a loaded build."""
    wide = (getattr(torch.ops, namespace(isa) + '_l16')
            if str(SOURCE_L16) in sources(isa) else None)
    return getattr(torch.ops, namespace(isa)), wide


def cache_root() -> Path:
    """Directory under which compiled extensions are cached."""
    for var in ('X3D_PLUGIN_CACHE', 'TORCH_EXTENSIONS_DIR'):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    return Path.home() / '.cache' / 'x3d_plugin' / 'extensions'


def build_spec(isa: str):
    """``(name, cflags, build_dir)`` of the build of class ``isa``."""
    model, flags = cpu_info()
    cflags = compile_flags(isa)
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), SOURCE_L16.read_bytes(),
                 SOURCE_BN.read_bytes(),
                 repr(cflags).encode(),
                 torch.__version__.encode(),
                 str(getattr(torch.version, 'git_version', '')).encode(),
                 sys.version.split()[0].encode(), platform.machine().encode(),
                 model.encode(), ' '.join(flags).encode()):
        h.update(part)
        h.update(b'\0')
    name = f'x3d_cwconv3d_{isa}_' + h.hexdigest()[:16]
    return name, cflags, cache_root() / name


def _load_extension(isa: str) -> str:
    """Builds (or loads the cached) extension of class ``isa``; returns the
    library's path and raises on failure."""
    name, cflags, build_dir = build_spec(isa)
    so = build_dir / f'{name}.so'
    marker = build_dir / 'built.ok'
    if marker.is_file() and so.is_file():
        torch.ops.load_library(str(so))
        return str(so)
    build_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils import cpp_extension
    if not cpp_extension.is_ninja_available():
        raise RuntimeError(
            'ninja is not installed (torch.utils.cpp_extension needs it); '
            'fix: pip install ninja')
    verbose = os.environ.get('X3D_PLUGIN_EXT_VERBOSE', '') == '1'
    cpp_extension.load(
        name=name,
        sources=sources(isa),
        extra_cflags=cflags,
        extra_ldflags=['-fopenmp'] if '-fopenmp' in cflags else [],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=verbose)
    write_file_atomically(f'{so}\n', str(marker))
    return str(so)


def load_isa(isa: str):
    """The ``torch.ops`` namespace of the 8-lane kernels of the build of
    class ``isa``, built or loaded on first call (raises on failure, e.g. a
    class this CPU lacks)."""
    if isa not in ISA_CLASSES:
        raise ValueError(f'unknown build class {isa!r}; use one of '
                         f'{", ".join(ISA_CLASSES)}')
    if isa not in cpu_isas():
        raise ValueError(f'this CPU cannot run the {isa} build (it has '
                         f'{", ".join(cpu_isas())})')
    with _LOCK:
        if isa not in _LOADED:
            _load_extension(isa)
            _LOADED[isa] = _namespaces(isa)
        return _LOADED[isa][0]


def _fix_hint(message: str) -> str:
    low = message.lower()
    if 'ninja' in low:
        return 'install ninja (pip install ninja)'
    if 'x3d_plugin_cpu_isa' in low:
        return 'unset X3D_PLUGIN_CPU_ISA or set it to a class this CPU has'
    if any(s in low for s in ('no such file or directory: \'c++\'',
                              'command \'c++\'', 'g++', 'compiler',
                              'not found')):
        return ('install a C++ compiler (e.g. apt-get install g++) and '
                'ninja (pip install ninja)')
    return ('check the compiler output (rerun with X3D_PLUGIN_EXT_VERBOSE=1)'
            ' or set X3D_PLUGIN_NO_EXT=1 to silence this')


def ensure_loaded() -> bool:
    """Builds or loads the default build (class :func:`cpu_isa`) once;
    whether it is available. A failure warns once."""
    if _STATE['loaded'] is not None:
        return _STATE['loaded']
    with _LOCK:
        if _STATE['loaded'] is not None:
            return _STATE['loaded']
        if os.environ.get('X3D_PLUGIN_NO_EXT', '') not in ('', '0'):
            _STATE['error'] = 'disabled by X3D_PLUGIN_NO_EXT'
            _STATE['loaded'] = False
            return False
        try:
            isa = cpu_isa()
            _load_extension(isa)
            _LOADED[isa] = _namespaces(isa)
            if _ACTIVE[0] is None:
                _ACTIVE[0] = isa
            _STATE['loaded'] = True
        except Exception as exc:  # never crash: fall back to F.conv3d
            message = str(exc).strip()
            if len(message) > 1500:
                message = '...' + message[-1500:]
            _STATE['error'] = f'{type(exc).__name__}: {message}'
            _STATE['loaded'] = False
            if not _STATE['warned']:
                _STATE['warned'] = True
                warnings.warn(
                    'x3d_plugin: the fast channelwise conv3d CPU extension '
                    f'could not be built ({_STATE["error"]}); falling back '
                    f'to F.conv3d (slow backward). Fix: {_fix_hint(message)}.',
                    UserWarning,
                    stacklevel=3)
        return _STATE['loaded']


def require_extension() -> None:
    """Raises ``RuntimeError`` naming the cause when the default build is
    unavailable."""
    if not ensure_loaded():
        raise RuntimeError('x3d_plugin: channelwise conv3d extension is '
                           f'unavailable: {extension_error()}')


def wide_lanes(channels: int, dtype: torch.dtype) -> bool:
    """Whether the 16-lane kernels (of the AVX-512 builds) take a
    convolution of ``channels`` channels in ``dtype``: float32 and float64
    where C is a multiple of 16 (elsewhere every second 64-byte load
    straddles two cache lines: 0.8-0.9x the 8-lane kernels at 54
    channels, 1.06-1.56x at 48, 192 and 432), bfloat16 also from 32
    channels on (a 16-lane bf16 load is 32 bytes: 1.05-1.36x at 54, 108
    and 216 channels). One thread, CPU time, Xeon with AVX512-BF16."""
    if channels % 16 == 0 and channels > 0:
        return True
    return dtype == torch.bfloat16 and channels >= 32


def kernels(channels: int = 0, dtype: torch.dtype = torch.float32):
    """The ``torch.ops`` namespace whose ``forward`` and ``backward`` the
    op calls for a convolution of ``channels`` channels in ``dtype``: of
    the default build, or of the one :func:`use_cpu_isa` chose; its
    16-lane kernels where it has them and :func:`wide_lanes` holds."""
    require_extension()
    narrow, wide = _LOADED[_ACTIVE[0]]
    if wide is not None and wide_lanes(channels, dtype):
        return wide
    return narrow


def bn_kernels():
    """The ``torch.ops`` namespace whose ``bn_forward`` and
    ``bn_backward`` :mod:`x3d_plugin.ops.batch_norm` calls (the build the
    channelwise ops call)."""
    require_extension()
    return _LOADED[_ACTIVE[0]][0]


def active_isa() -> Optional[str]:
    """The build class the op calls (None before the first load)."""
    return _ACTIVE[0]


def use_cpu_isa(isa: Optional[str] = None) -> str:
    """Makes the op call the build of class ``isa`` (building it if
    needed), e.g. to time the AVX2 and AVX-512 builds side by side in one
    process; None goes back to the default (:func:`cpu_isa`). Returns the
    class now used.

    Raises:
        ValueError: the class is unknown or this CPU lacks it.
        RuntimeError: the extension is unavailable.
    """
    require_extension()
    isa = isa or cpu_isa()
    load_isa(isa)
    _ACTIVE[0] = isa
    return isa


@torch.compiler.assume_constant_result
def fast_channelwise_available() -> bool:
    """Whether the C++ extension is (or can be) built and loaded.

    The first call builds or loads it; a failure warns once and returns
    False.
    """
    return ensure_loaded()


def extension_error() -> Optional[str]:
    """Why the extension is unavailable (None if it loaded or was not
    tried yet)."""
    return _STATE['error']
