"""The model benchmark runs end to end at the smallest size (its numbers
are not asserted: speed belongs in docs/benchmarks.md, not in tests)."""
import importlib.util

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
        'ours contiguous', 'ours + with_cp',
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
    # Measured here: ~200 MiB plain, ~110 MiB with checkpointing.
    assert 50 < memory['ours + with_cp'] < 0.8 * plain
