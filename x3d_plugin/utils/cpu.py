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
