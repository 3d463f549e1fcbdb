from .x3d import X3D

__all__ = ['X3D']
