from .checkpoint import (ATOMIC_BACKEND, AtomicLocalBackend,
                         SafeCheckpointHook)
from .fuse_conv_bn import FuseConvBNHook
from .non_finite_loss import NonFiniteLossError, NonFiniteLossHook
from .precise_bn import PreciseBNHook, update_bn_stats
from .preemption import PreemptionHook, TrainingPreempted
from .skipped_videos import SkippedVideosHook

__all__ = [
    'ATOMIC_BACKEND', 'AtomicLocalBackend', 'SafeCheckpointHook',
    'FuseConvBNHook', 'NonFiniteLossError', 'NonFiniteLossHook',
    'PreciseBNHook', 'PreemptionHook', 'SkippedVideosHook',
    'TrainingPreempted', 'update_bn_stats'
]
