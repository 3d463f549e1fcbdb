from .hooks import FuseConvBNHook, PreciseBNHook, SkippedVideosHook
from .schedulers import WarmupCosineLR

__all__ = [
    'FuseConvBNHook', 'PreciseBNHook', 'SkippedVideosHook', 'WarmupCosineLR'
]
