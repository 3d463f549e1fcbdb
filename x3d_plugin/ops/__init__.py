"""Custom operators (see :mod:`x3d_plugin.ops.channelwise_conv3d`)."""
from .channelwise_conv3d import (ChannelwiseConv3d, channelwise_conv3d,
                                 extension_error, fast_channelwise_available,
                                 fast_channelwise_enabled,
                                 set_fast_channelwise,
                                 triton_channelwise_available, triton_error)
from .cpu_extension import active_isa, cpu_isa, use_cpu_isa
from .forward_policy import set_forward_policy

__all__ = [
    'ChannelwiseConv3d', 'channelwise_conv3d', 'extension_error',
    'fast_channelwise_available', 'fast_channelwise_enabled',
    'set_fast_channelwise', 'triton_channelwise_available', 'triton_error',
    'active_isa', 'cpu_isa', 'use_cpu_isa', 'set_forward_policy'
]
