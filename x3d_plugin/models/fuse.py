"""Fold batch normalisation into the convolution before it, for inference.

In eval mode a BN layer is a fixed per-channel affine map, so
``bn(conv(x))`` equals one convolution with scaled weights and a bias. X3D
has a BN after almost every convolution (3 per block, the shortcut, the
stem and the head), and on CPU each of them is a full pass over the
activations; folding removes them all.

Only pairs where the BN directly follows the convolution are folded; the
modules that hold such pairs name them in ``conv_bn_pairs`` (dotted names
relative to the module). The BN is replaced by ``nn.Identity``.
"""
import copy
from typing import Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def fold_bn(conv: nn.Conv3d, bn: _BatchNorm) -> nn.Conv3d:
    """A convolution equal to ``bn(conv(x))`` with BN's running
    statistics."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError('cannot fold a BN layer without running statistics')
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine \
        else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        shift = shift + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    # A copy keeps the class (a ChannelwiseConv3d stays on the plugin's
    # kernel, whose kt x 1 x 1 forward is 50x oneDNN's), the geometry and
    # the weights' memory format; only the weight and bias change.
    fused = copy.deepcopy(conv)
    shape = (-1, ) + (1, ) * (conv.weight.dim() - 1)
    fused.weight.copy_(conv.weight * scale.reshape(shape))
    fused.bias = nn.Parameter(shift.to(conv.weight.dtype))
    return fused


def _parent(module: nn.Module, name: str) -> Tuple[nn.Module, str]:
    path, _, leaf = name.rpartition('.')
    return (module.get_submodule(path) if path else module), leaf


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every conv+BN pair of the X3D modules in ``model`` (in place,
    also returned). The model must be in eval mode: afterwards it is for
    inference only (the BN layers and their statistics are gone)."""
    if model.training:
        raise RuntimeError(
            'fuse_conv_bn needs a model in eval mode (call model.eval() '
            'first): folding uses the BN running statistics, which training '
            'would go on changing')
    fused = 0
    for module in list(model.modules()):
        pairs = getattr(module, 'conv_bn_pairs', None)
        if pairs is None:
            continue
        for conv_name, bn_name in pairs():
            bn = module.get_submodule(bn_name)
            if not isinstance(bn, _BatchNorm):
                continue  # folded already
            parent, leaf = _parent(module, conv_name)
            setattr(parent, leaf, fold_bn(module.get_submodule(conv_name),
                                          bn))
            parent, leaf = _parent(module, bn_name)
            setattr(parent, leaf, nn.Identity())
            fused += 1
    model.conv_bn_fused = fused
    return model
