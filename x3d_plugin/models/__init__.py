from .backbones import X3D
from .heads import X3DHead

__all__ = ['X3D', 'X3DHead']
