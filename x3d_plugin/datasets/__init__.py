from .transforms import *  # noqa: F401,F403
from .video_dataset import AnnotationError, CheckedVideoDataset
from .video_io import MissingPackageError

__all__ = ['AnnotationError', 'CheckedVideoDataset', 'MissingPackageError']
