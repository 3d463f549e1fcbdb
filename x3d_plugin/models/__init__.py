from .backbones import X3D
from .heads import X3DHead


def x3d_recognizer_cfg(arch='m', num_classes=400, **head):
    """Config dict of an MMAction2 ``Recognizer3D`` with the plugin's X3D
    backbone of ``arch`` and an ``X3DHead`` of matching widths."""
    from .backbones.x3d import x3d_structure
    _, widths, inner, _ = x3d_structure(X3D.resolve_arch(arch))
    return dict(
        type='Recognizer3D',
        backbone=dict(type='x3d_plugin.X3D', arch=arch),
        cls_head=dict(
            type='x3d_plugin.X3DHead',
            num_classes=num_classes,
            in_channels=widths[-1],
            mid_channels=inner[-1],
            **head),
        data_preprocessor=dict(
            type='ActionDataPreprocessor', format_shape='NCTHW'))


__all__ = ['X3D', 'X3DHead', 'x3d_recognizer_cfg']
