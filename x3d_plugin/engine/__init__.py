from .hooks import PreciseBNHook, SkippedVideosHook
from .schedulers import WarmupCosineLR

__all__ = ['PreciseBNHook', 'SkippedVideosHook', 'WarmupCosineLR']
