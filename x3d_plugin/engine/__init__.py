from .hooks import (FuseConvBNHook, NonFiniteLossError, NonFiniteLossHook,
                    PreciseBNHook, PreemptionHook, SafeCheckpointHook,
                    SkippedVideosHook, TrainingPreempted)
from .loops import ResumableEpochBasedTrainLoop
from .runner import X3DRunner
from .schedulers import WarmupCosineLR

__all__ = [
    'FuseConvBNHook', 'NonFiniteLossError', 'NonFiniteLossHook',
    'PreciseBNHook', 'PreemptionHook', 'ResumableEpochBasedTrainLoop',
    'SafeCheckpointHook',
    'SkippedVideosHook', 'TrainingPreempted', 'WarmupCosineLR', 'X3DRunner'
]
