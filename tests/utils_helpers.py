"""Helpers shared by the tests (not a test module)."""
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN buffer random (positive variances), so that a
    wrongly mapped tensor changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.running_mean.copy_(
                    torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(
                    torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model


def x3d_recognizer_cfg(arch='xs', num_classes=400, **head):
    from x3d_plugin.models import X3D
    factors = X3D.resolve_arch(arch)
    from x3d_plugin.models.backbones.x3d import x3d_structure
    _, widths, inner, _ = x3d_structure(factors)
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
