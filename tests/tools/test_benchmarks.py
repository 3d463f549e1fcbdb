"""The model benchmark runs end to end at the smallest size (its numbers
are not asserted: speed belongs in docs/benchmarks.md, not in tests)."""
import importlib.util

import torch

from conftest import ROOT


def load(name):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / 'tools' / 'benchmark' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_benchmark_rows(capsys):
    rows = load('model_speed').main(
        ['--archs', 'xs', '--batch', '1', '--rounds', '1', '--warmup', '0'])
    names = [row[2] for row in rows]
    assert names == [
        'mmaction2 default', 'mmaction2 + channels-last',
        'ours default (channels-last)', 'ours, aten channelwise conv',
        'ours, aten BN', 'ours contiguous', 'ours + with_cp',
        'ours + BN folded'
    ]
    for arch, model, name, precision, tc, tr, ic, ir in rows:
        assert ic > 0 and ir > 0
        # Folded BN is for inference only: no train-step number.
        assert (tc is None) == (name == 'ours + BN folded')
    baseline = rows[0]
    assert baseline[5] == 1.0 and baseline[7] == 1.0
    out = capsys.readouterr().out
    assert 'outputs agree' in out and '| X3D-XS 4x160² | ours + BN folded |' \
        in out


def test_peak_memory_of_a_train_step_is_measured():
    """Each configuration in its own process, as the benchmark does."""
    memory = load('model_speed').memory_column(
        'xs', ['ours default (channels-last)', 'ours + with_cp',
               'ours + BN folded'], 2, 'cpu')
    assert 'ours + BN folded' not in memory  # inference only
    plain = memory['ours default (channels-last)']
    # Measured on a 2-core Xeon: 103-125 MiB plain, 25-43 MiB with
    # checkpointing (186-188 MiB with PyTorch's BN, activations and SE).
    assert 10 < memory['ours + with_cp'] < 0.8 * plain


def test_norm_benchmark_times_every_bn_and_se_site():
    """The BN/SE benchmark finds each BN layer and SE block of X3D-XS once
    per forward and times all of them."""
    from x3d_plugin.models import build_x3d_recognizer
    from x3d_plugin.models.backbones.x3d import SqueezeExcitation, X3DBlock
    module = load('norm_speed')
    sites = module.record_sites('xs', 1)
    model = build_x3d_recognizer('xs')

    def count(cls):
        return sum(isinstance(m, cls) for m in model.modules())

    assert sum(c for k, c in sites.items() if k[0] == 'bn') == count(
        torch.nn.BatchNorm3d) > 40
    assert sum(c for k, c in sites.items()
               if k[0] == 'se') == count(SqueezeExcitation) > 5
    # BN + residual + ReLU ends every block.
    assert sum(c for k, c in sites.items()
               if k[3] and k[2] == 'relu') == count(X3DBlock)
    rows = module.main(['--batch', '1', '--repeats', '1'])
    assert len(rows) == len(sites)
    assert {r[1] for r in rows} == {k[1] for k in sites}
    assert all(r[4] > 0 and r[5] > 0 for r in rows)
