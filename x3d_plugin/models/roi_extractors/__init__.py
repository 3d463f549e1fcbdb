"""RoI feature extractors in plain PyTorch (no compiled mmcv ops)."""
from .roi_align import RoIAlign, roi_align
from .roi_extractor_3d import RoIAlignExtractor3D

__all__ = ['RoIAlign', 'RoIAlignExtractor3D', 'roi_align']
