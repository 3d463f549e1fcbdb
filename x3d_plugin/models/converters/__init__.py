"""Converters of X3D checkpoints of other implementations to plugin keys.

Each source format is a :class:`CheckpointFormat` in a module of its own in
this package (``slowfast.py``, ``pytorchvideo.py``, ``mmaction2.py``); every
module here is imported and registers its format, so adding a format is one
new file.
"""
import importlib
import pkgutil

from .base import (FORMATS, CheckpointFormat, ConversionError,
                   convert_state_dict, get_format, infer_arch,
                   register_format)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != 'base':
        importlib.import_module(f'{__name__}.{_module.name}')

__all__ = [
    'FORMATS', 'CheckpointFormat', 'ConversionError', 'convert_state_dict',
    'get_format', 'infer_arch', 'register_format'
]
