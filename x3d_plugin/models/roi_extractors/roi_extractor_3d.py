"""RoI features of a clip's feature map for AVA-style action detection."""
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from x3d_plugin.registry import MODELS
from .roi_align import POOL_MODES, RoIAlign

TEMPORAL_POOL_MODES = ('avg', 'max')


@MODELS.register_module()
class RoIAlignExtractor3D(nn.Module):
    """Frame-wise RoIAlign over a clip's feature map, in plain PyTorch.

    A drop-in for MMAction2's ``SingleRoIExtractor3D`` with
    ``roi_layer_type='RoIAlign'`` (same arguments, same outputs) that needs no
    compiled mmcv ops: the RoIAlign is :func:`~.roi_align.roi_align`. As in
    the SlowFast detector (Feichtenhofer et al., ICCV 2019, Sec. 5), each 2D
    box is replicated along time, the feature map is optionally averaged
    (or max-pooled) over time first, and every remaining time step is
    RoIAligned::

        feat  N x C x T x H x W   (several maps: resized to the largest T
                                   and concatenated along C)
        -> temporal pool          N x C x 1 x H x W   (with_temporal_pool)
        -> RoIAlign per frame     K x C x T' x P x Q  (+ the frame's
                                   globally pooled map with with_global)

    Args:
        roi_layer_type (str): Only ``'RoIAlign'`` (``'RoIPool'`` needs
            mmcv's compiled ops: use MMAction2's ``SingleRoIExtractor3D``
            with full mmcv). Defaults to ``'RoIAlign'``.
        featmap_stride (int): Input pixels per feature pixel. Defaults
            to 16.
        output_size (int | tuple[int, int]): Bins per RoI. Defaults to 16.
        sampling_ratio (int): Samples per bin along each axis, 0 for
            adaptive. Defaults to 0.
        pool_mode (str): ``'avg'`` or ``'max'`` within a bin. Defaults to
            ``'avg'``.
        aligned (bool): Half-pixel aligned boxes. Defaults to True.
        with_temporal_pool (bool): Pool the feature map over time before
            RoIAlign. Defaults to True.
        temporal_pool_mode (str): ``'avg'`` or ``'max'``. Defaults to
            ``'avg'``.
        with_global (bool): Append the whole frame's feature map, pooled to
            ``output_size``, to each RoI's channels. Defaults to False.
    """

    def __init__(self,
                 roi_layer_type: str = 'RoIAlign',
                 featmap_stride: int = 16,
                 output_size: Union[int, Tuple[int, int]] = 16,
                 sampling_ratio: int = 0,
                 pool_mode: str = 'avg',
                 aligned: bool = True,
                 with_temporal_pool: bool = True,
                 temporal_pool_mode: str = 'avg',
                 with_global: bool = False) -> None:
        super().__init__()
        if roi_layer_type != 'RoIAlign':
            raise ValueError(
                f"RoIAlignExtractor3D supports roi_layer_type='RoIAlign' "
                f'only, got {roi_layer_type!r}; for RoIPool use MMAction2\'s '
                f"'SingleRoIExtractor3D' with a full mmcv (compiled ops)")
        if pool_mode not in POOL_MODES:
            raise ValueError(f'pool_mode must be one of {POOL_MODES}, got '
                             f'{pool_mode!r}')
        if temporal_pool_mode not in TEMPORAL_POOL_MODES:
            raise ValueError(f'temporal_pool_mode must be one of '
                             f'{TEMPORAL_POOL_MODES}, got '
                             f'{temporal_pool_mode!r}')
        if featmap_stride <= 0:
            raise ValueError(f'featmap_stride must be > 0, got '
                             f'{featmap_stride}')
        self.roi_layer_type = roi_layer_type
        self.featmap_stride = featmap_stride
        self.spatial_scale = 1. / featmap_stride
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.pool_mode = pool_mode
        self.aligned = aligned
        self.with_temporal_pool = with_temporal_pool
        self.temporal_pool_mode = temporal_pool_mode
        self.with_global = with_global
        self.roi_layer = RoIAlign(
            output_size,
            self.spatial_scale,
            sampling_ratio=sampling_ratio,
            pool_mode=pool_mode,
            aligned=aligned)
        self.global_pool = nn.AdaptiveAvgPool2d(output_size)

    def _merge(self, feats: Sequence[Tensor]) -> Tensor:
        """One ``N x C x T x H x W`` map from one or several (nearest
        resize to the largest T, then concatenation along C)."""
        if len(feats) > 1:
            size = (max(f.shape[2] for f in feats), ) + tuple(
                feats[0].shape[3:])
            feats = [F.interpolate(f, size) for f in feats]
        if self.with_temporal_pool:
            if self.temporal_pool_mode == 'avg':
                feats = [f.mean(dim=2, keepdim=True) for f in feats]
            else:
                feats = [f.amax(dim=2, keepdim=True) for f in feats]
        return torch.cat(list(feats), dim=1)

    def forward(self, feat: Union[Tensor, Tuple[Tensor, ...]],
                rois: Tensor) -> Tuple[Tensor, Tensor]:
        """RoI features of ``rois`` on ``feat``.

        Args:
            feat (Tensor | tuple[Tensor]): Backbone features,
                ``N x C x T x H x W`` (a tuple of several maps is merged).
            rois (Tensor): ``K x 5`` rows ``(batch_index, x1, y1, x2, y2)``
                in input pixels.

        Returns:
            tuple[Tensor, Tensor]: RoI features ``K x C' x T' x P x Q``
            (``C' = 2C`` with ``with_global``; ``T' = 1`` with temporal
            pooling) and the merged, pooled feature map ``N x C x T' x H x
            W``.
        """
        if not isinstance(feat, (tuple, list)):
            feat = (feat, )
        feat = self._merge(feat)
        roi_feats = []
        batch_index = rois[:, 0].long()
        for t in range(feat.size(2)):
            frame = feat[:, :, t]
            roi_feat = self.roi_layer(frame, rois)
            if self.with_global:
                global_feat = self.global_pool(frame)[batch_index]
                roi_feat = torch.cat([roi_feat, global_feat], dim=1)
            roi_feats.append(roi_feat)
        return torch.stack(roi_feats, dim=2), feat
