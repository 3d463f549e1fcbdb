"""PyTorchVideo's X3D (``create_x3d`` and its hub models).

The stem's ``conv_t`` holds the 1x3x3 *spatial* conv and ``conv_xy`` the
5x1x1 temporal one (the names are swapped), and the first stage's shortcut
has no BN (``create_res_block`` adds one only where the width changes).
:meth:`PyTorchVideoFormat.postprocess` gives that shortcut an identity BN
(weight 1, bias 0, mean 0, var 1 - eps), which reproduces the outputs
exactly in eval mode; fine-tuning then trains it as PySlowFast does.
"""
import re
from typing import Dict, List

import torch
from torch import Tensor

from .base import BN, CheckpointFormat, register_format

# BN epsilon of PyTorchVideo's X3D (``norm_eps``).
BN_EPS = 1e-5


class PyTorchVideoFormat(CheckpointFormat):

    def postprocess(self, state: Dict[str, Tensor]) -> List[str]:
        made = []
        for key in list(state):
            match = re.fullmatch(
                r'(backbone\.layer\d\.\d+\.downsample)\.0\.weight', key)
            if match is None or f'{match[1]}.1.weight' in state:
                continue
            channels = state[key].shape[0]
            prefix = f'{match[1]}.1.'
            state[prefix + 'weight'] = torch.ones(channels)
            state[prefix + 'bias'] = torch.zeros(channels)
            state[prefix + 'running_mean'] = torch.zeros(channels)
            state[prefix + 'running_var'] = torch.full((channels, ),
                                                       1.0 - BN_EPS)
            state[prefix + 'num_batches_tracked'] = torch.tensor(0)
            made.append(match[1])
        if not made:
            return []
        return [
            'identity BN added to the BN-less shortcut of ' + ', '.join(made)
        ]


PYTORCHVIDEO = register_format(
    PyTorchVideoFormat(
        'pytorchvideo',
        rows=[
            # Swapped names: PyTorchVideo's conv_t is the 1x3x3 spatial conv.
            (r'blocks\.0\.conv\.conv_t\.weight',
             'backbone.stem.conv_xy.weight'),
            (r'blocks\.0\.conv\.conv_xy\.weight',
             'backbone.stem.conv_t.weight'),
            (r'blocks\.0\.norm\.' + BN, 'backbone.stem.bn.{p}'),
            (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch1_conv'
             r'\.weight', 'backbone.layer{layer}.{b}.downsample.0.weight'),
            (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch1_norm'
             r'\.' + BN, 'backbone.layer{layer}.{b}.downsample.1.{p}'),
            (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch2\.'
             r'conv_(?P<conv>[abc])\.weight',
             'backbone.layer{layer}.{b}.conv{n}.weight'),
            (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch2\.'
             r'norm_(?P<conv>[ac])\.' + BN,
             'backbone.layer{layer}.{b}.bn{n}.{p}'),
            (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch2\.'
             r'norm_b\.0\.' + BN, 'backbone.layer{layer}.{b}.bn2.{p}'),
            (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch2\.'
             r'norm_b\.1\.block\.0\.(?P<q>weight|bias)',
             'backbone.layer{layer}.{b}.se.fc1.{q}'),
            (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch2\.'
             r'norm_b\.1\.block\.2\.(?P<q>weight|bias)',
             'backbone.layer{layer}.{b}.se.fc2.{q}'),
            (r'blocks\.5\.pool\.pre_conv\.weight', 'cls_head.conv5.weight'),
            (r'blocks\.5\.pool\.pre_norm\.' + BN, 'cls_head.bn5.{p}'),
            (r'blocks\.5\.pool\.post_conv\.weight', 'cls_head.fc1.weight'),
            (r'blocks\.5\.proj\.(?P<q>weight|bias)', 'cls_head.fc_cls.{q}'),
        ]))
