from .fuse_conv_bn import FuseConvBNHook
from .precise_bn import PreciseBNHook, update_bn_stats
from .skipped_videos import SkippedVideosHook

__all__ = [
    'FuseConvBNHook', 'PreciseBNHook', 'SkippedVideosHook', 'update_bn_stats'
]
