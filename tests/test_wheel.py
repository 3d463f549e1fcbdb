"""The built wheel, installed into a fresh virtual environment with nothing
but torch, mmcv-lite and what the wheel itself declares, runs an inference
with a shipped config (so every package the default configs need is
declared)."""
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f'{cmd}\n{proc.stdout}\n{proc.stderr}'
    return proc


def test_wheel_installs_and_infers(tmp_path):
    dist = tmp_path / 'dist'
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
         '--no-build-isolation', '-q', '-w', str(dist), str(ROOT)])
    wheel, = dist.glob('x3d_plugin-*.whl')
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert 'x3d_plugin/ops/csrc/channelwise_conv3d.cpp' in names

    venv = tmp_path / 'venv'
    run([sys.executable, '-m', 'venv', str(venv)])
    python = str(venv / 'bin' / 'python')
    # torch and mmcv are the user's choice (CPU or CUDA build; mmcv or
    # mmcv-lite); everything else must come from the wheel's requirements.
    # The stack's pins are constraints only, so nothing undeclared sneaks in.
    run([python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
         str(wheel), 'torch==2.13.0', 'mmcv-lite==2.1.0', '-c',
         str(ROOT / 'requirements' / 'stack.txt')])
    script = textwrap.dedent(f"""
        import numpy as np
        import x3d_plugin
        from x3d_plugin.apis import init_recognizer, predict_video
        from x3d_plugin.datasets.demo_data import render_video, write_video
        from x3d_plugin.ops import fast_channelwise_available
        assert x3d_plugin.__file__.startswith({str(venv)!r}), x3d_plugin.__file__
        write_video('clip.mp4', render_video(2, np.random.default_rng(0)))
        model = init_recognizer({str(ROOT / 'configs' / 'x3d_xs_demo.py')!r})
        top = predict_video(model, 'clip.mp4', topk=3)['topk']
        print(len(top), sum(t['score'] for t in top) <= 1.0 + 1e-6,
              fast_channelwise_available())
    """)
    proc = run([python, '-c', script], cwd=tmp_path)
    assert proc.stdout.split() == ['3', 'True', 'True'], proc.stderr
