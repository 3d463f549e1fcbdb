"""The variant table is the one source of every variant fact: a fact
changed there changes the backbone, the head widths, the recognizer
builder, the converters' variant inference, the complexity tool and the
benchmarks."""
import importlib.util
from dataclasses import replace

import pytest
from conftest import ROOT
from x3d_plugin.models import (VARIANTS, X3D, build_x3d_recognizer,
                               x3d_recognizer_cfg)
from x3d_plugin.models.converters import convert_state_dict, infer_arch
from x3d_plugin.models.variants import (UnknownArchError, get_variant,
                                        resolve_factors, variants_with_structure)


def load_tool(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_fact_changed_in_the_table_changes_it_everywhere(monkeypatch,
                                                           capsys):
    narrow = replace(VARIANTS['xs'], width_factor=1.0, num_frames=6)
    monkeypatch.setitem(VARIANTS, 'xs', narrow)

    backbone = X3D(arch='xs')
    assert backbone.stage_widths == (16, 24, 48, 96)
    assert backbone.stem.conv_xy.out_channels == 16
    cfg = x3d_recognizer_cfg('xs', num_classes=3)
    assert (cfg['cls_head']['in_channels'],
            cfg['cls_head']['mid_channels']) == (96, 216)
    model = build_x3d_recognizer('xs', num_classes=3)
    assert model.cls_head.conv5.weight.shape[:2] == (216, 96)
    # The converters infer the variant from the table too.
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    assert infer_arch(state) == 'xs'
    # The complexity tool counts the clip the table gives.
    complexity = load_tool(ROOT / 'tools' / 'analysis' / 'complexity.py')
    complexity.main(['--arch', 'xs', '--no-mmengine'])
    assert 'input (3, 6, 160, 160)' in capsys.readouterr().out
    # The model benchmark times the table's clip.
    speed = load_tool(ROOT / 'tools' / 'benchmark' / 'model_speed.py')
    assert speed.clip_of('xs') == (6, 160)


def test_shared_network_and_lookup_errors():
    assert variants_with_structure(VARIANTS['m'].structure) == [
        'xs', 's', 'm']
    assert get_variant('XL') is VARIANTS['xl']
    with pytest.raises(UnknownArchError, match="unknown X3D arch 'xxl'"):
        get_variant('xxl')
    with pytest.raises(UnknownArchError, match='exactly the keys'):
        resolve_factors(dict(width_factor=2.0))
    with pytest.raises(UnknownArchError, match='positive number'):
        resolve_factors(
            dict(width_factor=2.0, depth_factor=0, bottleneck_factor=2.25))


def test_backbone_docstring_table_matches_the_variant_table():
    """The docstring's variant table is for readers; it must say what the
    table says."""
    rows = [line.split() for line in X3D.__doc__.splitlines()
            if line.strip().split(' ')[0] in VARIANTS]
    assert [r[0] for r in rows] == list(VARIANTS)
    for name, width, depth, bottleneck, widths, inner, blocks in rows:
        variant, structure = VARIANTS[name], VARIANTS[name].structure
        assert (float(width), float(depth), float(bottleneck)) == (
            variant.width_factor, variant.depth_factor,
            variant.bottleneck_factor)
        assert widths == '/'.join(map(str, structure.stage_widths))
        assert inner == '/'.join(map(str, structure.inner_widths))
        assert blocks == '/'.join(map(str, structure.stage_blocks))


def test_converted_checkpoint_names_its_variants():
    from mmaction.registry import MODELS
    from x3d_plugin.models.converters.mmaction2 import \
        mmaction2_recognizer_cfg
    theirs = MODELS.build(mmaction2_recognizer_cfg('l', 5))
    result = convert_state_dict(theirs.state_dict(), 'mmaction2')
    assert result['arch'] == 'l' and result['num_classes'] == 5
    assert variants_with_structure(result['structure']) == ['l']
    with pytest.raises(ValueError, match='cannot build X3D-XL'):
        mmaction2_recognizer_cfg('xl', 5)
