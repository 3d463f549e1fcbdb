from .loading import (DecordInitAtScale, PyAVInitAtScale, PyAVSparseDecode,
                      RobustDecordDecode, SlowFastSampleFrames,
                      clip_frame_indices, clip_span)
from .sparse_reader import SparseVideoReader, VideoDecodeError

__all__ = [
    'DecordInitAtScale', 'PyAVInitAtScale', 'PyAVSparseDecode',
    'RobustDecordDecode', 'SlowFastSampleFrames', 'SparseVideoReader',
    'VideoDecodeError', 'clip_frame_indices', 'clip_span'
]
