from .fuse import fold_bn, fuse_conv_bn
from .state_dict import describe_mismatch, load_state_dict_checked

__all__ = [
    'describe_mismatch', 'fold_bn', 'fuse_conv_bn', 'load_state_dict_checked'
]
