"""The one way to make an X3D recognizer of a variant."""
from typing import Dict, Union

from torch import nn

from .variants import resolve_factors, x3d_structure


def x3d_recognizer_cfg(arch: Union[str, Dict] = 'm',
                       num_classes: int = 400,
                       **head) -> dict:
    """Config dict of an MMAction2 ``Recognizer3D`` with the plugin's X3D
    backbone of ``arch`` (a variant name or a factor dict) and an
    ``X3DHead`` of matching widths; ``head`` adds head arguments."""
    structure = x3d_structure(resolve_factors(arch))
    return dict(
        type='Recognizer3D',
        backbone=dict(type='x3d_plugin.X3D', arch=arch),
        cls_head=dict(
            type='x3d_plugin.X3DHead',
            num_classes=num_classes,
            in_channels=structure.head_in_channels,
            mid_channels=structure.head_mid_channels,
            **head),
        data_preprocessor=dict(
            type='ActionDataPreprocessor', format_shape='NCTHW'))


def build_x3d_recognizer(arch: Union[str, Dict] = 'm',
                         num_classes: int = 400,
                         **head) -> nn.Module:
    """The recognizer of :func:`x3d_recognizer_cfg`, built (train mode;
    PySlowFast's initialisation comes with ``init_weights()``, as for any
    MMEngine model)."""
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmaction'):
        return MODELS.build(x3d_recognizer_cfg(arch, num_classes, **head))
