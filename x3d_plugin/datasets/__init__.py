from .annotations import (AnnotationError, read_annotation_list,
                          read_label_map)
from .samplers import SampleKey, SeededSampler, sample_randomness
from .transforms import *  # noqa: F401,F403
from .video_dataset import CheckedVideoDataset
from .video_io import MissingPackageError

__all__ = [
    'AnnotationError', 'CheckedVideoDataset', 'MissingPackageError',
    'SampleKey', 'SeededSampler', 'read_annotation_list', 'read_label_map',
    'sample_randomness'
]
