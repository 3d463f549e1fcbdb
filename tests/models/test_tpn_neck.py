"""X3D's stages 3 and 4 through MMAction2's TPN neck and TPNHead
(configs/tpn): shapes at full width on a small clip, a few training steps
that move the neck, and the auxiliary loss."""
import math

import pytest
import torch
from mmaction.registry import MODELS
from mmaction.structures import ActionDataSample
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from conftest import ROOT
from x3d_plugin.apis.config_check import check_config

CONFIG = ROOT / 'configs' / 'tpn' / 'tpn-x3d_m_8xb16-16x5x1-300e_k400.py'
# 16 frames as X3D-M's clips; 64 pixels (instead of 224) keeps CPU time
# small: layer3 is 4 x 4 and layer4 2 x 2.
FRAMES, SIZE = 16, 64


@pytest.fixture(scope='module')
def cfg():
    return Config.fromfile(str(CONFIG))


def build(cfg):
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def batch(num, seed=0, size=SIZE):
    """``num`` uint8 clips with labels, as the data loader gives them."""
    gen = torch.Generator().manual_seed(seed)
    inputs = [
        torch.randint(0, 256, (1, 3, FRAMES, size, size), generator=gen,
                      dtype=torch.uint8) for _ in range(num)
    ]
    samples = [ActionDataSample().set_gt_label(i % 400) for i in range(num)]
    return dict(inputs=inputs, data_samples=samples)


def test_config_builds_full_size_and_shapes(cfg):
    model = build(cfg).eval()
    assert tuple(model.backbone.stage_widths[2:]) == (96, 192)
    assert model.neck.in_channels == (96, 192)
    x = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        feats = model.backbone(x)
        assert [tuple(f.shape) for f in feats] == [(2, 96, FRAMES, 4, 4),
                                                   (2, 192, FRAMES, 2, 2)]
        neck_out, aux = model.neck(feats)
        # Temporal max-pooling by 8: 16 frames -> 2; layer3 brought to
        # layer4's 2 x 2; pyramid fusion to 2048 channels.
        assert tuple(neck_out.shape) == (2, 2048, 2, 2, 2)
        assert aux == {}
        scores = model.cls_head(neck_out)
    assert tuple(scores.shape) == (2, 400)
    assert torch.isfinite(scores).all()
    # The full test path: 1 clip x 1 view each, fcn_test as configured.
    with torch.no_grad():
        out = model.test_step(batch(2))
    assert len(out) == 2
    for sample in out:
        assert sample.pred_score.shape == (400, )
        assert float(sample.pred_score.sum()) == pytest.approx(1.0,
                                                               abs=1e-4)


def test_training_steps_move_neck_and_aux_head(cfg):
    torch.manual_seed(0)
    model = build(cfg).train()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    neck_before = {k: v.detach().clone()
                   for k, v in model.neck.named_parameters()}
    for step in range(2):
        # 32 pixels: layer3 is 2 x 2, layer4 1 x 1 (a 64-pixel step takes
        # about 10x longer on 2 cores).
        log = model.train_step(batch(2, seed=step, size=32), optim)
        assert {'loss_cls', 'loss_aux'} <= set(log)
        assert math.isfinite(float(log['loss']))
        assert float(log['loss_aux']) > 0
    changed = {
        k for k, v in model.neck.named_parameters()
        if not torch.equal(v.detach(), neck_before[k])
    }
    # Every neck parameter that gets a gradient was updated, the auxiliary
    # head's included; the loss is the sum of both heads' losses.
    assert any(k.startswith('aux_head.') for k in changed)
    assert any(k.startswith('pyramid_fusion.') for k in changed)
    assert any(k.startswith('temporal_modulation_ops.') for k in changed)
    assert changed == set(neck_before)
    assert float(log['loss']) == pytest.approx(
        float(log['loss_cls']) + float(log['loss_aux']), rel=1e-5)


def test_check_config_accepts_neck(cfg):
    check_config(cfg, mode='train', check_data=False)
