from .x3d_head import X3DHead

__all__ = ['X3DHead']
