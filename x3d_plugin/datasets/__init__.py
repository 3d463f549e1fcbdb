from .transforms import *  # noqa: F401,F403
from .video_dataset import AnnotationError, CheckedVideoDataset

__all__ = ['AnnotationError', 'CheckedVideoDataset']
