"""RoIAlign (He et al., "Mask R-CNN", ICCV 2017) in plain PyTorch.

The same numbers as mmcv's compiled ``RoIAlign`` (and detectron2's, and
torchvision's ``roi_align``) without a compiled extension, so MMAction2's AVA
detector runs on mmcv-lite. Gradients come from autograd.

Definition, for one RoI ``(b, x1, y1, x2, y2)`` in input-image pixels and an
output of ``P x Q`` bins:

* box in feature pixels: ``x1 * spatial_scale - o`` ... with ``o = 0.5`` if
  ``aligned`` (pixel centres at ``i + 0.5``), else ``o = 0`` and the box at
  least 1 x 1;
* each bin gets a ``gh x gw`` grid of sample points at the centres of equal
  sub-cells (``gh = sampling_ratio``, or ``ceil(box_height / P)`` when
  ``sampling_ratio`` is 0; likewise ``gw``);
* a sample at ``(y, x)`` outside ``[-1, H] x [-1, W]`` is 0; otherwise it is
  clamped into the map and interpolated bilinearly from its four neighbours;
* a bin is the mean (``'avg'``) or the maximum (``'max'``) of its samples.

Because the samples of a bin lie on a grid, the bilinear weights factorise
into a row part and a column part; ``'avg'`` is then two matrix products per
RoI, ``out = Ay @ F[b] @ Ax^T``, where ``Ay`` (``P x H``) averages the row
weights of a bin's samples and ``Ax`` (``Q x W``) the column weights.
"""
from typing import Tuple, Union

import torch
from torch import Tensor, nn

POOL_MODES = ('avg', 'max')


def _pair(size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(size)
    if len(size) != 2:
        raise ValueError(f'output_size must be an int or (height, width), '
                         f'got {size}')
    return int(size[0]), int(size[1])


def _axis_weights(start: Tensor, length: Tensor, bins: int, grid: Tensor,
                  max_grid: int, size: int) -> Tensor:
    """Bilinear weights of every sample along one axis.

    Args:
        start (Tensor): ``K`` box starts in feature pixels.
        length (Tensor): ``K`` box lengths.
        bins (int): Output bins along the axis.
        grid (Tensor): ``K`` samples per bin (int64).
        max_grid (int): ``grid.max()``, the padded sample count.
        size (int): Feature map length along the axis.

    Returns:
        Tensor: ``K x bins x max_grid x size``; rows of padded samples
        (index >= grid) and of samples outside ``[-1, size]`` are zero.
    """
    dtype, device = start.dtype, start.device
    bin_size = length / bins
    k = torch.arange(bins, dtype=dtype, device=device)
    i = torch.arange(max_grid, dtype=dtype, device=device)
    # Sample positions in the order mmcv's kernel computes them.
    pos = (start[:, None, None] + k[None, :, None] * bin_size[:, None, None] +
           (i[None, None, :] + 0.5) * bin_size[:, None, None] /
           grid.clamp(min=1).to(dtype)[:, None, None])
    used = (i[None, None, :] < grid[:, None, None]) & (pos >= -1.0) & (
        pos <= size)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(pos), pos - low.to(dtype))
    cells = torch.arange(size, device=device)
    weights = ((cells == low[..., None]).to(dtype) * (1 - frac)[..., None] +
               (cells == high[..., None]).to(dtype) * frac[..., None])
    return weights * used[..., None].to(dtype)


def roi_align(input: Tensor,
              rois: Tensor,
              output_size: Union[int, Tuple[int, int]],
              spatial_scale: float = 1.0,
              sampling_ratio: int = 0,
              pool_mode: str = 'avg',
              aligned: bool = True) -> Tensor:
    """RoIAlign of ``rois`` on the feature maps ``input``.

    Args:
        input (Tensor): Feature maps, ``N x C x H x W``.
        rois (Tensor): ``K x 5`` rows ``(batch_index, x1, y1, x2, y2)`` in
            input-image pixels. No gradient flows to them (as in mmcv and
            torchvision).
        output_size (int | tuple[int, int]): Bins ``(P, Q)`` per RoI.
        spatial_scale (float): Feature pixels per image pixel
            (``1 / featmap_stride``). Defaults to 1.0.
        sampling_ratio (int): Samples per bin along each axis; 0 takes
            ``ceil(box_size / bins)`` per RoI. Defaults to 0.
        pool_mode (str): ``'avg'`` or ``'max'`` over a bin's samples.
            Defaults to ``'avg'``.
        aligned (bool): Shift the box by half a pixel so pixel centres sit
            at ``i + 0.5`` (mmcv/detectron2 ``aligned=True``). Defaults to
            True.

    Returns:
        Tensor: ``K x C x P x Q``.
    """
    if input.dim() != 4:
        raise ValueError(f'roi_align takes N x C x H x W feature maps, got '
                         f'shape {tuple(input.shape)}')
    if rois.dim() != 2 or rois.size(1) != 5:
        raise ValueError(f'rois must be K x 5 rows (batch_index, x1, y1, x2, '
                         f'y2), got shape {tuple(rois.shape)}')
    if pool_mode not in POOL_MODES:
        raise ValueError(f'pool_mode must be one of {POOL_MODES}, got '
                         f'{pool_mode!r}')
    if sampling_ratio < 0:
        raise ValueError(f'sampling_ratio must be >= 0 (0: adaptive), got '
                         f'{sampling_ratio}')
    out_h, out_w = _pair(output_size)
    num_rois = rois.size(0)
    _, channels, height, width = input.shape
    if num_rois == 0:
        return input.new_zeros(0, channels, out_h, out_w)

    # Coordinates in the input's precision (float32 for half types).
    dtype = input.dtype if input.dtype in (torch.float32,
                                           torch.float64) else torch.float32
    rois = rois.detach().to(dtype)
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    box_w = rois[:, 3] * spatial_scale - offset - x1
    box_h = rois[:, 4] * spatial_scale - offset - y1
    if aligned:
        negative = ((box_w < 0) | (box_h < 0)).nonzero()
        if len(negative):
            i = int(negative[0])
            raise ValueError(
                f'RoI {i} ({rois[i, 1:].tolist()}) has x2 < x1 or y2 < y1; '
                f'boxes must be (x1, y1, x2, y2) with x1 <= x2, y1 <= y2')
    else:
        box_w = box_w.clamp(min=1.0)
        box_h = box_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = torch.full((num_rois, ), sampling_ratio, device=rois.device)
        grid_w = grid_h
    else:
        grid_h = torch.ceil(box_h / out_h).long()
        grid_w = torch.ceil(box_w / out_w).long()
    max_h = max(int(grid_h.max()), 1)
    max_w = max(int(grid_w.max()), 1)
    wy = _axis_weights(y1, box_h, out_h, grid_h, max_h, height)
    wx = _axis_weights(x1, box_w, out_w, grid_w, max_w, width)

    feats = input[rois[:, 0].long()]  # K x C x H x W
    wy = wy.to(input.dtype)
    wx = wx.to(input.dtype)
    if pool_mode == 'avg':
        # A bin's mean over its gh x gw samples: average the row weights
        # over the gh samples and the column weights over the gw samples.
        count_h = grid_h.clamp(min=1).to(input.dtype)[:, None, None]
        count_w = grid_w.clamp(min=1).to(input.dtype)[:, None, None]
        ay = wy.sum(dim=2) / count_h  # K x P x H
        ax = wx.sum(dim=2) / count_w  # K x Q x W
        out = torch.matmul(ay[:, None], feats)  # K x C x P x W
        return torch.matmul(out, ax.transpose(1, 2)[:, None])
    # 'max': every sample's value, then the maximum over the real ones.
    samples = torch.matmul(wy.flatten(1, 2)[:, None], feats)
    samples = torch.matmul(samples, wx.flatten(1, 2).transpose(1, 2)[:, None])
    samples = samples.view(num_rois, channels, out_h, max_h, out_w, max_w)
    real_h = torch.arange(max_h, device=rois.device)[None] < grid_h[:, None]
    real_w = torch.arange(max_w, device=rois.device)[None] < grid_w[:, None]
    real = real_h[:, None, None, :, None, None] & real_w[:, None, None, None,
                                                         None, :]
    samples = samples.masked_fill(~real, float('-inf'))
    out = samples.amax(dim=(3, 5))
    # A bin without samples (a zero-size box with adaptive sampling) is 0.
    empty = ((grid_h == 0) | (grid_w == 0))[:, None, None, None]
    return out.masked_fill(empty, 0.0)


class RoIAlign(nn.Module):
    """:func:`roi_align` as a module, with the arguments of mmcv's
    ``RoIAlign`` (``use_torchvision`` aside).

    Args:
        output_size (int | tuple[int, int]): Bins per RoI.
        spatial_scale (float): ``1 / featmap_stride``. Defaults to 1.0.
        sampling_ratio (int): Samples per bin along each axis, 0 for
            adaptive. Defaults to 0.
        pool_mode (str): ``'avg'`` or ``'max'``. Defaults to ``'avg'``.
        aligned (bool): Half-pixel aligned boxes. Defaults to True.
    """

    def __init__(self,
                 output_size: Union[int, Tuple[int, int]],
                 spatial_scale: float = 1.0,
                 sampling_ratio: int = 0,
                 pool_mode: str = 'avg',
                 aligned: bool = True) -> None:
        super().__init__()
        if pool_mode not in POOL_MODES:
            raise ValueError(f'pool_mode must be one of {POOL_MODES}, got '
                             f'{pool_mode!r}')
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.pool_mode = pool_mode
        self.aligned = aligned

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        """RoI features ``K x C x P x Q`` of ``rois`` (``K x 5``) on
        ``input`` (``N x C x H x W``)."""
        return roi_align(input, rois, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.pool_mode, self.aligned)

    def extra_repr(self) -> str:
        return (f'output_size={self.output_size}, '
                f'spatial_scale={self.spatial_scale}, '
                f'sampling_ratio={self.sampling_ratio}, '
                f'pool_mode={self.pool_mode!r}, aligned={self.aligned}')
