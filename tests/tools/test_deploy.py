"""tools/deployment/export.py (OpenVINO IR with float32 weights, int8
calibrated on the config's training videos) and ``--engine`` in
tools/test.py and tools/infer.py: an exported model is tested with the
config's own test pipeline and metric."""
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import ROOT
from utils_helpers import randomize
from x3d_plugin.apis import init_recognizer
from x3d_plugin.datasets.demo_data import generate

pytest.importorskip('openvino')
pytest.importorskip('onnxruntime')
# Each tool run is a process that imports MMAction2 (5-10 s on 2 cores).
pytestmark = pytest.mark.slow

DEMO = ROOT / 'configs' / 'x3d_xs_demo.py'


def run(*args, env=None):
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True,
        cwd=ROOT, timeout=600,
        env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A tiny generated demo dataset (16 training, 8 test videos), its
    config, and a checkpoint with random weights."""
    root = tmp_path_factory.mktemp('deploy')
    generate(root / 'data', train_per_class=2, val_per_class=1, frames=16)
    cfg = root / 'cfg.py'
    cfg.write_text(textwrap.dedent(f"""
        _base_ = [{str(DEMO)!r}]
        data_root = {str(root / 'data')!r}

        def _dataset(split):
            return dict(ann_file=f'{{data_root}}/{{split}}_list_videos.txt',
                        data_prefix=dict(video=data_root))

        train_dataloader = dict(num_workers=0, persistent_workers=False,
                                dataset=_dataset('train'))
        val_dataloader = dict(num_workers=0, persistent_workers=False,
                              dataset=_dataset('val'))
        test_dataloader = dict(batch_size=2, num_workers=0,
                               persistent_workers=False,
                               dataset=_dataset('val'))
    """))
    model = init_recognizer(str(cfg))
    randomize(model, seed=2)
    checkpoint = root / 'demo.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    return root, cfg, checkpoint


@pytest.fixture(scope='module')
def ir(tiny):
    root, cfg, checkpoint = tiny
    out = root / 'x3d.xml'
    proc = run('tools/deployment/export.py', cfg, checkpoint, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


def test_export_writes_float32_openvino_ir(ir):
    out, stdout = ir
    assert 'openvino, float32, input (N, 3, 8, 48, 48)' in stdout
    diff = float(re.search(r'difference to PyTorch: (\S+) of the largest',
                           stdout).group(1))
    assert diff < 1e-4
    assert out.with_suffix('.bin').is_file()
    xml = out.read_text()
    # Weights stay float32: no f16 constants (OpenVINO's default
    # compression) and every convolution reads f32 weights.
    assert 'element_type="f16"' not in xml
    assert len(re.findall(r'type="Convolution"|type="GroupConvolution"',
                          xml)) > 50
    assert 'BatchNorm' not in xml  # folded into the convolutions


def _scores(path):
    with open(path, 'rb') as f:
        return np.stack([r['pred_score'].numpy() for r in pickle.load(f)])


def test_test_py_on_openvino_equals_pytorch(tiny, ir):
    root, cfg, checkpoint = tiny
    results = {}
    for engine, model in (('pytorch', checkpoint), ('openvino', ir[0])):
        dump = root / f'{engine}.pkl'
        extra = ['--engine', 'openvino'] if engine == 'openvino' else []
        proc = run('tools/test.py', cfg, model, '--work-dir',
                   root / f'work_{engine}', '--dump', dump, *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        metric = re.search(r'Test result: (\{.*\})', proc.stdout)
        results[engine] = (json.loads(metric.group(1)), _scores(dump))
    (metrics_pt, scores_pt), (metrics_ov, scores_ov) = (results['pytorch'],
                                                        results['openvino'])
    assert scores_ov.shape == scores_pt.shape == (8, 8)
    # Random weights: the scores are far from uniform, so equal scores
    # mean equal logits on all 2 x 3 views of every video.
    assert scores_pt.max(1).min() > 0.3
    np.testing.assert_allclose(scores_ov, scores_pt, atol=1e-5)
    assert metrics_ov == metrics_pt


def test_infer_py_on_engines(tiny, ir):
    root, cfg, checkpoint = tiny
    video = root / 'data' / 'videos' / 'val'
    video = sorted(video.iterdir())[0]
    tops = {}
    for name, args in (('pytorch', [checkpoint]),
                       ('openvino', [ir[0], '--engine', 'openvino']),
                       ('auto', [checkpoint, '--engine', 'auto'])):
        out = root / f'infer_{name}.json'
        proc = run('tools/infer.py', video, '--config', cfg, '--checkpoint',
                   *args, '--out', out)
        assert proc.returncode == 0, proc.stderr[-2000:]
        tops[name] = json.loads(out.read_text())['topk']
    for name in ('openvino', 'auto'):
        assert [t['index'] for t in tops[name]] == [
            t['index'] for t in tops['pytorch']]
        np.testing.assert_allclose([t['score'] for t in tops[name]],
                                   [t['score'] for t in tops['pytorch']],
                                   atol=1e-5)


@pytest.mark.parametrize('suffix', ['.xml', '.onnx'])
def test_int8_export_calibrates_on_training_videos(tiny, suffix):
    root, cfg, checkpoint = tiny
    out = root / f'int8{suffix}'
    proc = run('tools/deployment/export.py', cfg, checkpoint, out, '--int8',
               '--calibrate', 6)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'int8 vs float32 on the 6 calibration clips: same '
                      r'top-1 on ([\d.]+)%', proc.stdout)
    assert found and 0 <= float(found.group(1)) <= 100
    dump = root / f'int8{suffix}.pkl'
    proc = run('tools/test.py', cfg, out, '--engine', 'auto', '--work-dir',
               root / 'work_int8', '--dump', dump)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Test result: {"acc/top1"' in proc.stdout
    scores = _scores(dump)
    assert scores.shape == (8, 8) and np.isfinite(scores).all()


def test_errors_are_one_line(tiny, ir):
    root, cfg, checkpoint = tiny
    proc = run('tools/test.py', cfg, root / 'missing.xml', '--engine',
               'openvino', '--work-dir', root / 'work_err')
    assert proc.returncode == 1
    assert "checkpoint" in proc.stderr and 'missing.xml' in proc.stderr
    broken = root / 'broken.onnx'
    broken.write_bytes(b'not an onnx model')
    proc = run('tools/test.py', cfg, broken, '--engine', 'onnxruntime',
               '--work-dir', root / 'work_err')
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'broken.onnx' in last
    # A missing engine package names the extra to install.
    hide = root / 'hide'
    hide.mkdir(exist_ok=True)
    (hide / 'openvino.py').write_text(
        'raise ImportError("No module named openvino")\n')
    proc = subprocess.run(
        [sys.executable, 'tools/infer.py', str(sorted(
            (root / 'data' / 'videos' / 'val').iterdir())[0]), '--config',
         str(cfg), '--checkpoint', str(ir[0]), '--engine', 'openvino'],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env=dict(os.environ, PYTHONPATH=f'{hide}{os.pathsep}{ROOT}'))
    assert proc.returncode == 1
    assert 'pip install -e ".[deploy]"' in proc.stderr
    proc = run('tools/deployment/export.py', cfg, checkpoint,
               root / 'x.ts', '--int8')
    assert proc.returncode == 1 and 'OpenVINO IR (.xml) or ONNX' in \
        proc.stderr


def test_engine_benchmark_rows(capsys):
    """The engine benchmark runs end to end (its speeds are not asserted:
    they belong in the docs); every float32 row gives the float64
    reference's logits within 1e-4."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'engine_speed', ROOT / 'tools' / 'benchmark' / 'engine_speed.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(['--archs', 'xs', '--batches', '1', '--rounds', '1',
                        '--warmup', '1', '--no-compile', '--no-int8'])
    names = [row[2] for row in rows]
    assert names[:2] == ['PyTorch eager', 'PyTorch eager, BN folded']
    assert 'ONNX Runtime' in names and 'OpenVINO f32 (auto)' in names
    for _, batch, name, precision, ms, speedup, error in rows:
        assert batch == 1 and ms > 0 and speedup > 0
        if precision == 'f32':
            assert error < 1e-4, name
    assert rows[0][5] == 1.0
    out = capsys.readouterr().out
    assert out.startswith('CPU: ') and '| X3D-XS | 1 | OpenVINO f32 (auto) |' \
        in out
