"""Checkpoint conversion from PySlowFast, PyTorchVideo and MMAction2: exact
outputs after conversion, and clear errors for files that do not fit."""
import subprocess
import sys

import pytest
import torch
from mmaction.registry import MODELS
from mmengine.runner import load_checkpoint

from conftest import ROOT, import_pytorchvideo_x3d
from utils_helpers import randomize, x3d_recognizer_cfg
from x3d_plugin.models.checkpoint import extract_state_dict
from x3d_plugin.models.converters import ConversionError, convert_state_dict
from x3d_plugin.models.converters.mmaction2 import mmaction2_recognizer_cfg

SLOWFAST_DIR = 'reference/slowfast_x3d_xs'


def logits(model, x):
    model.eval()
    with torch.no_grad():
        return model.cls_head(model.backbone(x))


def test_slowfast_reference_reproduced(shared_dir):
    """PySlowFast's own checkpoint file and outputs (shared/reference)."""
    ckpt = torch.load(shared_dir / SLOWFAST_DIR / 'x3d_xs_slowfast_random.pyth',
                      weights_only=True)
    io = torch.load(shared_dir / SLOWFAST_DIR / 'x3d_xs_slowfast_io.pt',
                    weights_only=True)
    result = convert_state_dict(extract_state_dict(ckpt), 'slowfast')
    assert result['arch'] == 'm' and result['num_classes'] == 400
    assert result['mapped'] == 568
    model = MODELS.build(x3d_recognizer_cfg('xs'))
    model.load_state_dict(result['state_dict'], strict=True)
    out = logits(model, io['input'])
    assert (out - io['logits']).abs().max() < 1e-4
    assert (out.softmax(-1) - io['probs']).abs().max() < 1e-6


@pytest.mark.parametrize('depth_factor, arch', [(2.2, 'xs'), (5.0, 'l')])
def test_pytorchvideo_equivalence(depth_factor, arch):
    create_x3d = import_pytorchvideo_x3d()
    ref = create_x3d(
        input_clip_length=4,
        input_crop_size=64,
        model_num_class=13,
        depth_factor=depth_factor,
        head_activation=None)
    randomize(ref, seed=1).eval()
    result = convert_state_dict(ref.state_dict(), 'pytorchvideo')
    assert result['arch'] == ('m' if arch == 'xs' else arch)
    assert any('identity BN' in note for note in result['notes'])
    model = MODELS.build(x3d_recognizer_cfg(arch, num_classes=13))
    model.load_state_dict(result['state_dict'], strict=True)
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        expected = ref(x)
    assert (logits(model, x) - expected).abs().max() < 1e-4


def test_mmaction2_equivalence():
    ref = MODELS.build(mmaction2_recognizer_cfg('xs', num_classes=9))
    randomize(ref, seed=2).eval()
    result = convert_state_dict(
        dict(ref.state_dict(), **{}), 'mmaction2')
    model = MODELS.build(x3d_recognizer_cfg('xs', num_classes=9))
    model.load_state_dict(result['state_dict'], strict=True)
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        expected = ref.cls_head(ref.backbone(x))
    assert (logits(model, x) - expected).abs().max() < 1e-4


def test_wrong_source_format_names_unmapped_keys(shared_dir):
    ckpt = torch.load(shared_dir / SLOWFAST_DIR / 'x3d_xs_slowfast_random.pyth',
                      weights_only=True)
    with pytest.raises(ConversionError, match='568 keys .* no mapping'):
        convert_state_dict(extract_state_dict(ckpt), 'pytorchvideo')


def test_missing_tensor_is_an_error(shared_dir):
    state = dict(
        extract_state_dict(
            torch.load(shared_dir / SLOWFAST_DIR /
                       'x3d_xs_slowfast_random.pyth', weights_only=True)))
    del state['s3.pathway0_res1.branch2.b_bn.running_var']
    with pytest.raises(ConversionError, match='missing from the file'):
        convert_state_dict(state, 'slowfast')


def test_class_count_checked_and_classifier_droppable(shared_dir):
    state = extract_state_dict(
        torch.load(shared_dir / SLOWFAST_DIR / 'x3d_xs_slowfast_random.pyth',
                   weights_only=True))
    with pytest.raises(ConversionError, match='400 classes, the config 2'):
        convert_state_dict(state, 'slowfast', num_classes=2)
    result = convert_state_dict(
        state, 'slowfast', num_classes=2, drop_classifier=True)
    assert 'cls_head.fc_cls.weight' not in result['state_dict']
    model = MODELS.build(x3d_recognizer_cfg('xs', num_classes=2))
    missing, unexpected = model.load_state_dict(
        result['state_dict'], strict=False)
    assert sorted(missing) == ['cls_head.fc_cls.bias', 'cls_head.fc_cls.weight']
    assert unexpected == []


def run_tool(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'convert_checkpoint.py'), *args],
        capture_output=True,
        text=True,
        cwd=ROOT)


def test_cli_converts_and_load_from_accepts_it(shared_dir, tmp_path):
    dst = tmp_path / 'x3d_xs_converted.pth'
    proc = run_tool(
        str(shared_dir / SLOWFAST_DIR / 'x3d_xs_slowfast_random.pyth'),
        str(dst), '--from', 'slowfast')
    assert proc.returncode == 0, proc.stderr
    assert 'X3D-XS/S/M' in proc.stdout and 'tensors mapped: 568' in proc.stdout
    io = torch.load(shared_dir / SLOWFAST_DIR / 'x3d_xs_slowfast_io.pt',
                    weights_only=True)
    # As the runner's load_from does (MMEngine's load_checkpoint).
    model = MODELS.build(x3d_recognizer_cfg('xs'))
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    assert (logits(model, io['input']) - io['logits']).abs().max() < 1e-4
    # As a backbone-only Pretrained init with a prefix.
    cfg = x3d_recognizer_cfg('xs', num_classes=5)
    cfg['backbone']['init_cfg'] = dict(
        type='Pretrained', checkpoint=str(dst), prefix='backbone.')
    model = MODELS.build(cfg)
    model.init_weights()
    torch.testing.assert_close(
        model.backbone.stem.conv_xy.weight,
        torch.load(dst, weights_only=True)['state_dict']
        ['backbone.stem.conv_xy.weight'])


def test_cli_errors(shared_dir, tmp_path):
    proc = run_tool(str(tmp_path / 'nope.pyth'), str(tmp_path / 'o.pth'),
                    '--from', 'slowfast')
    assert proc.returncode != 0 and 'does not exist' in proc.stderr
    src = str(shared_dir / SLOWFAST_DIR / 'x3d_xs_slowfast_random.pyth')
    proc = run_tool(src, str(tmp_path / 'o.pth'), '--from', 'mmaction2')
    assert proc.returncode != 0 and 'no mapping' in proc.stderr
    assert not (tmp_path / 'o.pth').exists()


def test_pretrained_of_another_variant_is_a_clear_error(tmp_path):
    from x3d_plugin.models import X3D
    path = tmp_path / 'l_backbone.pth'
    torch.save({'state_dict': X3D(arch='l').state_dict()}, path)
    backbone = X3D(
        arch='m', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match='not in the model'):
        backbone.init_weights()
    backbone = X3D(
        arch='m',
        init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='bb.'))
    with pytest.raises(ValueError, match="no key starting with 'bb.'"):
        backbone.init_weights()


def test_load_from_with_other_class_count_is_a_clear_error(tmp_path):
    model = MODELS.build(x3d_recognizer_cfg('xs', num_classes=400))
    path = tmp_path / 'k400.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    other = MODELS.build(x3d_recognizer_cfg('xs', num_classes=2))
    with pytest.raises(ValueError, match='400 classes .* num_classes=2'):
        load_checkpoint(other, str(path), map_location='cpu')
