"""Helpers shared by the tests (not a test module)."""
import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from x3d_plugin.models import x3d_recognizer_cfg  # noqa: F401 (re-export)


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


def smooth_frames(num, height, width):
    t, y, x = np.meshgrid(np.arange(num), np.arange(height),
                          np.arange(width), indexing='ij')
    return np.stack([
        128 + 100 * np.sin(x / 7 + t / 3),
        128 + 100 * np.cos(y / 9 - t / 4),
        128 + 90 * np.sin((x + y) / 11 + t / 5)
    ], -1).astype(np.uint8)
