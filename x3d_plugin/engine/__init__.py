from .hooks import (FuseConvBNHook, NonFiniteLossError, NonFiniteLossHook,
                    PreciseBNHook, PreemptionHook, SkippedVideosHook,
                    TrainingPreempted)
from .schedulers import WarmupCosineLR

__all__ = [
    'FuseConvBNHook', 'NonFiniteLossError', 'NonFiniteLossHook',
    'PreciseBNHook', 'PreemptionHook', 'SkippedVideosHook',
    'TrainingPreempted', 'WarmupCosineLR'
]
