"""The plain-PyTorch RoIAlign against its definition, closed-form values,
gradients, and (where a full mmcv is installed) mmcv's compiled op."""
import math

import pytest
import torch

import x3d_plugin  # noqa: F401  (registers the plugin scope)
from x3d_plugin.compat.detection import has_compiled_mmcv_ops
from x3d_plugin.models.roi_extractors import (RoIAlign, RoIAlignExtractor3D,
                                              roi_align)


def _bilinear(fmap, y, x):
    """One sample of a C x H x W map, from the definition: 0 outside
    [-1, H] x [-1, W], else clamped into the map and interpolated."""
    height, width = fmap.shape[1:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(fmap.shape[0], dtype=fmap.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[:, y0, x0] +
            (1 - ly) * lx * fmap[:, y0, x1] + ly * (1 - lx) * fmap[:, y1, x0] +
            ly * lx * fmap[:, y1, x1])


def reference_roi_align(feats, rois, out_size, scale, sampling_ratio,
                        pool_mode, aligned):
    """RoIAlign with plain loops over RoIs, bins and samples."""
    out_h, out_w = out_size
    out = torch.zeros(len(rois), feats.shape[1], out_h, out_w,
                      dtype=feats.dtype)
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        x1, y1 = x1 * scale - offset, y1 * scale - offset
        box_w, box_h = x2 * scale - offset - x1, y2 * scale - offset - y1
        if not aligned:
            box_w, box_h = max(box_w, 1.0), max(box_h, 1.0)
        bin_h, bin_w = box_h / out_h, box_w / out_w
        grid_h = sampling_ratio or math.ceil(box_h / out_h)
        grid_w = sampling_ratio or math.ceil(box_w / out_w)
        for p in range(out_h):
            for q in range(out_w):
                values = [
                    _bilinear(feats[int(b)],
                              y1 + p * bin_h + (i + 0.5) * bin_h / grid_h,
                              x1 + q * bin_w + (j + 0.5) * bin_w / grid_w)
                    for i in range(grid_h) for j in range(grid_w)
                ]
                if not values:
                    continue
                values = torch.stack(values)
                out[k, :, p, q] = (
                    values.mean(0) if pool_mode == 'avg' else values.amax(0))
    return out


def _rois(dtype=torch.float64):
    """Boxes inside, across the border, outside, tiny, degenerate and
    large, in image pixels of a 14 x 18 image (the map is 7 x 9 at scale
    0.5)."""
    return torch.tensor(
        [[0, 1.0, 2.0, 9.0, 11.0], [1, 0.0, 0.0, 18.0, 14.0],
         [0, -4.0, -3.0, 5.0, 6.0], [1, 12.5, 7.25, 21.0, 19.0],
         [0, 3.3, 4.4, 3.9, 5.1], [1, 6.0, 6.0, 6.0, 6.0],
         [0, 30.0, 30.0, 40.0, 35.0], [1, 2.0, 1.0, 17.5, 13.0]],
        dtype=dtype)


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('pool_mode', ['avg', 'max'])
def test_matches_definition(aligned, sampling_ratio, pool_mode):
    torch.manual_seed(0)
    feats = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    rois = _rois()
    got = roi_align(feats, rois, (2, 3), 0.5, sampling_ratio, pool_mode,
                    aligned)
    want = reference_roi_align(feats, rois, (2, 3), 0.5, sampling_ratio,
                               pool_mode, aligned)
    assert got.shape == (8, 3, 2, 3)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # Boxes far outside the map pool nothing but zeros.
    assert got[6].abs().max() == 0


def test_float32_matches_float64():
    torch.manual_seed(1)
    feats = torch.randn(2, 4, 7, 9, dtype=torch.float64)
    rois = _rois()
    want = roi_align(feats, rois, 3, 0.5)
    got = roi_align(feats.float(), rois.float(), 3, 0.5)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)


def test_ramp_gives_bin_centres():
    """On the map F[c, h, w] = w + 10 h, bilinear interpolation is exact, so
    an aligned average bin is the value at its centre."""
    height, width = 8, 10
    ramp = (torch.arange(width, dtype=torch.float64)[None] +
            10 * torch.arange(height, dtype=torch.float64)[:, None])
    feats = ramp.expand(1, 2, height, width)
    # In feature pixels the box is [1.5, 7.5] x [2.0, 5.0] after the
    # half-pixel shift: inside the map, away from the clamped border.
    rois = torch.tensor([[0, 4.0, 5.0, 16.0, 11.0]], dtype=torch.float64)
    out = roi_align(feats, rois, (3, 2), spatial_scale=0.5, aligned=True)
    x_centres = torch.tensor([1.5 + 1.5, 1.5 + 4.5], dtype=torch.float64)
    y_centres = torch.tensor([2.0 + 0.5, 2.0 + 1.5, 2.0 + 2.5],
                             dtype=torch.float64)
    want = x_centres[None] + 10 * y_centres[:, None]
    torch.testing.assert_close(out[0, 0], want, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[0, 1], want, rtol=0, atol=1e-12)


def test_constant_map_inside_box():
    feats = torch.full((1, 3, 6, 6), 2.5)
    rois = torch.tensor([[0, 1.0, 1.0, 5.0, 4.0]])
    out = RoIAlign(4, 1.0)(feats, rois)
    torch.testing.assert_close(out, torch.full((1, 3, 4, 4), 2.5))


@pytest.mark.parametrize('pool_mode', ['avg', 'max'])
def test_gradient(pool_mode):
    torch.manual_seed(2)
    feats = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.5, 1.0, 9.0, 8.0], [1, 2.0, 0.0, 11.0, 9.5],
         [1, -3.0, 4.0, 4.0, 12.0]],
        dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda f: roi_align(f, rois, (2, 2), 0.5, 2, pool_mode, True),
        (feats, ))


def test_gradient_is_transpose_of_forward():
    """RoIAlign (avg) is linear in the features: <A f, g> = <f, A^T g>."""
    torch.manual_seed(3)
    feats = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    out = roi_align(feats, _rois(), (2, 3), 0.5)
    grad_out = torch.randn_like(out)
    (grad, ) = torch.autograd.grad(out, feats, grad_out)
    torch.testing.assert_close((out * grad_out).sum(),
                               (feats * grad).sum())
    # Only maps the RoIs sample receive a gradient; the RoIs get none.
    assert grad.abs().sum() > 0


def test_no_rois():
    out = roi_align(torch.randn(1, 4, 5, 5), torch.zeros(0, 5), (2, 2))
    assert out.shape == (0, 4, 2, 2)


@pytest.mark.parametrize('kwargs, message', [
    (dict(pool_mode='median'), 'pool_mode'),
    (dict(sampling_ratio=-1), 'sampling_ratio'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        roi_align(torch.randn(1, 1, 4, 4), torch.zeros(1, 5), 2, **kwargs)


def test_bad_rois():
    with pytest.raises(ValueError, match='K x 5'):
        roi_align(torch.randn(1, 1, 4, 4), torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match='x1 <= x2'):
        roi_align(
            torch.randn(1, 1, 4, 4), torch.tensor([[0, 3.0, 0, 1.0, 2.0]]), 2)


def test_extractor_pools_time_then_aligns():
    torch.manual_seed(4)
    feat = torch.randn(2, 5, 4, 6, 6)
    rois = torch.tensor([[0, 2.0, 3.0, 40.0, 50.0], [1, 10.0, 0.0, 90.0,
                                                     70.0]])
    extractor = RoIAlignExtractor3D(featmap_stride=16, output_size=3)
    roi_feats, pooled = extractor(feat, rois)
    assert roi_feats.shape == (2, 5, 1, 3, 3)
    assert pooled.shape == (2, 5, 1, 6, 6)
    want = roi_align(feat.mean(2), rois, 3, 1 / 16)
    torch.testing.assert_close(roi_feats[:, :, 0], want)


def test_extractor_per_frame_with_global():
    torch.manual_seed(5)
    feat = torch.randn(2, 3, 2, 4, 4)
    rois = torch.tensor([[1, 0.0, 0.0, 30.0, 20.0]])
    extractor = RoIAlignExtractor3D(
        featmap_stride=8,
        output_size=2,
        with_temporal_pool=False,
        with_global=True)
    roi_feats, _ = extractor(feat, rois)
    assert roi_feats.shape == (1, 6, 2, 2, 2)
    for t in range(2):
        torch.testing.assert_close(roi_feats[:, :3, t],
                                   roi_align(feat[:, :, t], rois, 2, 1 / 8))
        torch.testing.assert_close(
            roi_feats[:, 3:, t],
            torch.nn.functional.adaptive_avg_pool2d(feat[1:, :, t], 2))


def test_extractor_rejects_roipool():
    with pytest.raises(ValueError, match='RoIPool'):
        RoIAlignExtractor3D(roi_layer_type='RoIPool')


def test_extractor_builds_in_mmdet_scope():
    """The AVA head builds its extractor from MMDetection's registry, in
    the mmdet scope; the config reaches the plugin through mmaction."""
    mmdet_registry = pytest.importorskip('mmdet.registry')
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        extractor = mmdet_registry.MODELS.build(
            dict(
                type='x3d_plugin.RoIAlignExtractor3D',
                _scope_='mmaction',
                output_size=7))
    assert isinstance(extractor, RoIAlignExtractor3D)
    assert extractor.roi_layer.spatial_scale == 1 / 16


@pytest.mark.skipif(
    not has_compiled_mmcv_ops(),
    reason='needs a full mmcv with compiled ops (mmcv-lite has none)')
@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('pool_mode', ['avg', 'max'])
def test_matches_mmcv_compiled_op(aligned, pool_mode):
    from mmcv.ops import roi_align as mmcv_roi_align
    torch.manual_seed(6)
    feats = torch.randn(2, 3, 7, 9, requires_grad=True)
    rois = _rois(torch.float32)[:6]  # mmcv returns -1e4 for empty bins
    out = roi_align(feats, rois, (2, 3), 0.5, 0, pool_mode, aligned)
    ref = mmcv_roi_align(feats, rois, (2, 3), 0.5, 0, pool_mode, aligned)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad_out = torch.randn_like(out)
    (grad, ) = torch.autograd.grad(out, feats, grad_out)
    (ref_grad, ) = torch.autograd.grad(ref, feats, grad_out)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)
