from .loading import (DecordInitAtScale, RobustDecordDecode,
                      SlowFastSampleFrames, VideoDecodeError)

__all__ = [
    'DecordInitAtScale', 'RobustDecordDecode', 'SlowFastSampleFrames',
    'VideoDecodeError'
]
