"""X3D networks: the variant table, backbone, head, checkpoint loading and
conversion, BN folding, complexity counts and continual (per-frame)
inference."""
from .backbones import X3D, X3DStem
from .complexity import count_parameters, paper_flops
from .continual import (ContinualX3D, clip_reference, continual_flops,
                        continual_from_recognizer)
from .fuse import fold_bn, fuse_conv_bn
from .heads import X3DHead
from .recognizer import build_x3d_recognizer, x3d_recognizer_cfg
from .roi_extractors import RoIAlign, RoIAlignExtractor3D, roi_align
from .variants import VARIANTS, Variant, get_variant

__all__ = [
    'ContinualX3D', 'RoIAlign', 'RoIAlignExtractor3D', 'VARIANTS', 'Variant',
    'X3D', 'X3DHead', 'X3DStem', 'build_x3d_recognizer', 'clip_reference',
    'continual_flops', 'continual_from_recognizer', 'count_parameters',
    'fold_bn', 'fuse_conv_bn', 'get_variant', 'paper_flops', 'roi_align',
    'x3d_recognizer_cfg'
]
