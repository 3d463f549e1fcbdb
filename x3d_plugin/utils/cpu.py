"""What the CPU is: read once from /proc/cpuinfo where there is one."""
import functools
import platform
from typing import Tuple


@functools.lru_cache(maxsize=None)
def cpu_info() -> Tuple[str, Tuple[str, ...]]:
    """The CPU's model name and its feature flags, sorted (e.g. ``avx2``,
    ``avx512f``); the flags are empty where /proc/cpuinfo is missing."""
    model, flags = '', ()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key in ('model name', 'Processor') and not model:
                    model = value.strip()
                elif key in ('flags', 'Features') and not flags:
                    flags = tuple(sorted(value.split()))
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def native_bf16() -> bool:
    """Whether the CPU computes in bfloat16 (AVX512-BF16, AMX-BF16, or
    Arm's BF16 instructions); elsewhere PyTorch converts every bf16 value
    to float32 and back around each operation."""
    flags = set(cpu_info()[1])
    return bool(flags & {'avx512_bf16', 'amx_bf16', 'bf16'})
