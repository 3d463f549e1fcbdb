from .loading import (DecordInitAtScale, PyAVInitAtScale, PyAVSparseDecode,
                      RobustDecordDecode, SlowFastSampleFrames)
from .sparse_reader import SparseVideoReader, VideoDecodeError

__all__ = [
    'DecordInitAtScale', 'PyAVInitAtScale', 'PyAVSparseDecode',
    'RobustDecordDecode', 'SlowFastSampleFrames', 'SparseVideoReader',
    'VideoDecodeError'
]
