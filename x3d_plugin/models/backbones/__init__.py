from .x3d import X3D, X3DStem

__all__ = ['X3D', 'X3DStem']
