"""X3D classification head (PySlowFast ``head_helper.X3DHead``)."""
from typing import Dict, Sequence, Union

import torch
from mmaction.models.heads import BaseHead
from mmcv.cnn import build_norm_layer
from torch import Tensor, nn

from x3d_plugin.ops.batch_norm import batch_norm_act
from x3d_plugin.registry import MODELS
from ..precision import cpu_bf16_as_fp32


@MODELS.register_module()
class X3DHead(BaseHead):
    """X3D head: 1x1x1 conv to the bottleneck width, BN, ReLU, average pool
    over T, H, W, a bias-free linear layer to ``fc_channels``, ReLU, dropout,
    classifier.

    It is an MMAction2 ``BaseHead``, so ``average_clips`` ('prob', 'score' or
    None) averages the clips and crops of a video in ``predict`` and the
    loss options of ``BaseHead`` apply.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the last backbone stage (192 for
            X3D-XS/S/M/L, 280 for XL).
        mid_channels (int): Width of the 1x1x1 conv, PySlowFast's ``conv_5``
            (432 for XS/S/M/L, 630 for XL).
        fc_channels (int): Width of the linear layer before the classifier,
            PySlowFast's ``lin_5`` (``X3D.DIM_C5 = 2048``).
        loss_cls (dict): Classification loss. Defaults to
            ``dict(type='CrossEntropyLoss')``.
        norm_cfg (dict): Normalisation after the 1x1x1 conv. Defaults to
            ``dict(type='BN3d')``.
        dropout_ratio (float): Dropout before the classifier
            (``MODEL.DROPOUT_RATE = 0.5``). Defaults to 0.5.
        init_std (float): Std of the normal init of the linear layers
            (PySlowFast: 0.01). Defaults to 0.01.
        **kwargs: Passed to :class:`mmaction.models.heads.BaseHead`
            (``average_clips``, ``label_smooth_eps``, ``topk``...).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 mid_channels: int = 432,
                 fc_channels: int = 2048,
                 loss_cls: Dict = dict(type='CrossEntropyLoss'),
                 norm_cfg: Dict = dict(type='BN3d', requires_grad=True),
                 dropout_ratio: float = 0.5,
                 init_std: float = 0.01,
                 **kwargs) -> None:
        if num_classes <= 0:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        super().__init__(num_classes, in_channels, loss_cls, **kwargs)
        self.mid_channels = mid_channels
        self.fc_channels = fc_channels
        self.init_std = init_std
        self.conv5 = nn.Conv3d(
            in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn5 = build_norm_layer(norm_cfg, mid_channels)[1]
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(mid_channels, fc_channels, bias=False)
        self.dropout = nn.Dropout(dropout_ratio) if dropout_ratio > 0 else None
        self.fc_cls = nn.Linear(fc_channels, num_classes)

    def init_weights(self) -> None:
        nn.init.kaiming_normal_(
            self.conv5.weight, mode='fan_out', nonlinearity='relu')
        nn.init.ones_(self.bn5.weight)
        nn.init.zeros_(self.bn5.bias)
        for fc in (self.fc1, self.fc_cls):
            nn.init.normal_(fc.weight, std=self.init_std)
        nn.init.zeros_(self.fc_cls.bias)

    def conv_bn_pairs(self):
        """(conv, BN) pairs that :func:`~x3d_plugin.models.fuse_conv_bn`
        can fold."""
        return [('conv5', 'bn5')]

    def forward(self, x: Union[Tensor, Sequence[Tensor]], **kwargs) -> Tensor:
        """Class scores ``N x num_classes`` of backbone features; with
        several backbone outputs the last (deepest) is used. Under CPU
        bf16 autocast on a CPU without bf16 instructions it runs in float32
        (:mod:`x3d_plugin.models.precision`); on one with them the 1x1x1
        conv runs in bf16 and the linear layers in float32."""
        if isinstance(x, (tuple, list)):
            x = x[-1]
        with cpu_bf16_as_fp32(x) as x:
            return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        x = batch_norm_act(self.conv5(x), self.bn5, act='relu')
        if x.device.type == 'cpu' and torch.is_autocast_enabled('cpu'):
            # The two linear layers see one pooled vector per clip: under
            # CPU autocast, casting their weights (fc_channels x
            # (mid_channels + num_classes) values) to bf16 and their
            # gradients back at every step takes longer than the products,
            # so they run in float32 (float32 scores).
            with torch.autocast('cpu', enabled=False):
                return self._classify(x.float().mean(dim=(2, 3, 4)))
        return self._classify(x.mean(dim=(2, 3, 4)))

    def _classify(self, x: Tensor) -> Tensor:
        x = self.relu(self.fc1(x))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc_cls(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + 'fc_cls.weight'
        if key in state_dict and state_dict[key].shape[0] != self.num_classes:
            raise ValueError(
                f'the checkpoint\'s classifier has {state_dict[key].shape[0]} '
                f'classes but the model has num_classes={self.num_classes}. '
                'Set model.cls_head.num_classes to match, or convert the '
                'checkpoint with tools/convert_checkpoint.py '
                '--drop-classifier to fine-tune a new classifier.')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
