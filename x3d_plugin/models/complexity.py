"""Parameter and FLOP counts as the X3D paper reports them.

The paper (and PySlowFast's ``misc.get_model_stats``) counts one FLOP per
multiply-add of convolution and linear layers and nothing else. The count
here runs the model on the ``meta`` device, so even X3D-XL at 16x312² costs
no arithmetic.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or frozen) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def paper_flops(model: nn.Module,
                input_shape: Sequence[int],
                forward=None) -> Dict[str, int]:
    """Multiply-adds of every ``nn.Conv3d``/``nn.Conv2d``/``nn.Linear`` for
    one input of ``input_shape`` (e.g. ``(1, 3, 16, 224, 224)``).

    Args:
        model (nn.Module): The network; it is copied to the meta device.
        input_shape (Sequence[int]): Shape of the input tensor.
        forward (callable, optional): ``forward(model, x)``, for models
            whose call is not ``model(x)`` (e.g. backbone then head).

    Returns:
        dict: module name -> multiply-adds, plus ``'total'``.
    """
    meta_model = _to_meta(model).eval()
    counts: Dict[str, int] = {}
    handles = []
    for name, module in meta_model.named_modules():
        if isinstance(module, (nn.Conv3d, nn.Conv2d)):
            per_output = module.in_channels // module.groups
            for k in module.kernel_size:
                per_output *= k
        elif isinstance(module, nn.Linear):
            per_output = module.in_features
        else:
            continue

        def hook(mod, args, output, name=name, per_output=per_output):
            counts[name] = counts.get(name, 0) + output.numel() * per_output

        handles.append(module.register_forward_hook(hook))
    x = torch.empty(*input_shape, device='meta')
    with torch.no_grad():
        if forward is None:
            meta_model(x)
        else:
            forward(meta_model, x)
    for handle in handles:
        handle.remove()
    counts['total'] = sum(counts.values())
    return counts


_CROP_VIEWS = {'ThreeCrop': 3, 'TenCrop': 10, 'CenterCrop': 1}


def views_of_test_pipeline(test_pipeline) -> Optional[Tuple[Tuple[int, ...], int]]:
    """One test view's input shape ``(1, 3, T, H, W)`` and the number of
    views per video (clips x crops) that ``test_pipeline`` makes, or None
    when it has no frame sampler or crop to read them from."""
    frames = size = None
    views = 1
    for step in test_pipeline:
        kind = step['type'].split('.')[-1]
        if kind in ('SlowFastSampleFrames', 'SampleFrames'):
            frames = step['clip_len']
            views *= step.get('num_clips', 1)
        elif kind in _CROP_VIEWS:
            size = step['crop_size']
            views *= _CROP_VIEWS[kind]
    if frames is None or size is None:
        return None
    return (1, 3, frames, size, size), views


def stage_flops(counts: Dict[str, int]) -> Dict[str, int]:
    """Group the per-module counts of :func:`paper_flops` of a recognizer
    (``backbone.*``, ``cls_head.*``) by stage: stem, layer1..4, head."""
    stages: Dict[str, int] = {}
    for name, value in counts.items():
        if name == 'total':
            continue
        parts = name.split('.')
        if parts[0] == 'backbone':
            key = parts[1]
        elif parts[0] == 'cls_head':
            key = 'head'
        else:
            key = parts[0]
        stages[key] = stages.get(key, 0) + value
    return stages


def _to_meta(model: nn.Module) -> nn.Module:
    import copy
    clone = copy.deepcopy(model)
    return clone.to_empty(device='meta')
