"""Helpers shared by the benchmark scripts in tools/benchmark."""
import torch

from .cpu import cpu_info
from .malloc import freed_memory_kept

_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16')


def describe_machine() -> str:
    """One line describing the CPU, its relevant ISA flags, torch's thread
    count, the torch version and whether freed memory is kept in the
    process (:func:`x3d_plugin.utils.malloc.keep_freed_memory`), for the
    header of a benchmark table."""
    model, flags = cpu_info()
    isa = [f for f in _FLAGS if f in flags]
    malloc = ('freed memory kept' if freed_memory_kept() else
              'default malloc')
    return (f'CPU: {model} ({", ".join(isa) or "no avx2/avx512/amx"}); '
            f'torch {torch.__version__}, {torch.get_num_threads()} threads; '
            f'{malloc}')
