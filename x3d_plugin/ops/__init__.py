"""Custom operators (see :mod:`x3d_plugin.ops.channelwise_conv3d`)."""
from .channelwise_conv3d import (ChannelwiseConv3d, channelwise_conv3d,
                                 extension_error, fast_channelwise_available,
                                 fast_channelwise_enabled,
                                 set_fast_channelwise,
                                 triton_channelwise_available, triton_error)

__all__ = [
    'ChannelwiseConv3d', 'channelwise_conv3d', 'extension_error',
    'fast_channelwise_available', 'fast_channelwise_enabled',
    'set_fast_channelwise', 'triton_channelwise_available', 'triton_error'
]
