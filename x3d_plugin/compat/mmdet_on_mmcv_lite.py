"""Importing this module makes MMDetection importable on mmcv-lite
(:func:`x3d_plugin.compat.detection.enable`).

The AVA configs (configs/detection) name it in ``custom_imports``, so it
takes effect only in processes that build such a detector; ``import
x3d_plugin`` alone never installs the placeholder ``mmcv._ext``.
"""
from .detection import enable

enable()
