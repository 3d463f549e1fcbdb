"""The GPU run's wheel set (tools/benchmark/gpu_wheels.py): it downloads,
installs with ``pip --no-index --no-deps`` into an empty folder, and
``x3d_plugin`` with everything the GPU steps import loads from that folder
beside torch and the packages a bare GPU machine has, and nothing else.

The bare machine is imitated with this Python's own torch: a folder of links
to the installed distributions of ``gpu_wheels.ASSUMED_PRESENT`` and their
requirements (:func:`machine_view`) stands for the machine's site-packages,
and the interpreter runs with ``-S`` (no site-packages at all), so that
``sys.path`` is the wheel folder, the checkout, that view and the standard
library. Downloads need the package index; the tests are skipped with the
reason when it cannot be reached. pip's cache keeps the wheels between runs.
"""
import glob
import importlib.metadata as metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import ROOT

LOCAL_PYTHON = f'{sys.version_info.major}.{sys.version_info.minor}'
# opencv-python-headless (the machine's cv2) is stood in for by the
# opencv-python installed here, which provides the same cv2.
STAND_INS = {'opencv_python_headless': ('opencv-python', )}


def load_gpu_wheels():
    spec = importlib.util.spec_from_file_location(
        'gpu_wheels', ROOT / 'tools' / 'benchmark' / 'gpu_wheels.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gw = load_gpu_wheels()


@pytest.fixture(scope='module')
def index(tmp_path_factory):
    """Skips unless pip can download from the package index."""
    done = subprocess.run(
        [sys.executable, '-m', 'pip', 'download', '--no-deps',
         '--only-binary=:all:', '-d',
         str(tmp_path_factory.mktemp('probe')), 'addict==2.4.0'],
        capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip('the package index cannot be reached (pip download '
                    f'addict==2.4.0: {done.stderr.strip()[-300:]})')


def machine_view(folder):
    """Links to the installed distributions a bare GPU machine has
    (``gpu_wheels.ASSUMED_PRESENT`` and what they require), one per
    top-level name of their files.

    Args:
        folder (Path): An empty folder to fill.

    Returns:
        set[str]: The normalized names of the linked distributions.
    """
    todo, seen, dists = list(gw.ASSUMED_PRESENT), set(), []
    while todo:
        name = gw.normalize(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            todo += STAND_INS.get(name, ())
            continue
        dists.append(dist)
        for req in map(Requirement, dist.requires or ()):
            if req.marker is None or req.marker.evaluate({'extra': ''}):
                todo.append(req.name)
    folder.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        for top in {f.parts[0] for f in dist.files or ()}:
            if top in ('..', '__pycache__') or top.endswith('.pth'):
                continue
            link = folder / top
            if not os.path.lexists(link):
                link.symlink_to(dist.locate_file(top))
    return {gw.normalize(d.metadata['Name']) for d in dists}


def bare_env(*paths):
    """Environment of a process that sees only ``paths`` besides the
    standard library (with ``python -S``)."""
    return dict(PATH=os.environ['PATH'], HOME=os.environ.get('HOME', '/'),
                PYTHONNOUSERSITE='1', PYTHONDONTWRITEBYTECODE='1',
                PYTHONPATH=os.pathsep.join(map(str, paths)))


def install(python, wheels, target):
    """``pip install --no-index --no-deps --target`` as gpu_tables.sh
    does; returns the installed top-level names."""
    assert not target.exists() or not any(target.iterdir())
    subprocess.run(
        [*python, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps',
         '--no-compile', '--disable-pip-version-check', '--target',
         str(target), *map(str, sorted(wheels.glob('*.whl')))],
        check=True, env={**os.environ, 'PIP_ROOT_USER_ACTION': 'ignore'})
    return {p.name for p in target.iterdir()}


@pytest.fixture(scope='module')
def local_set(index, tmp_path_factory):
    """The wheel set for this Python, installed into an empty folder, and
    the imitated machine site-packages."""
    base = tmp_path_factory.mktemp('local_set')
    report = gw.build(base / 'whl', python_version=LOCAL_PYTHON)
    target = base / 'site'
    install([sys.executable], base / 'whl', target)
    view = base / 'machine'
    linked = machine_view(view)
    return dict(report=report, wheels=base / 'whl', target=target,
                view=view, linked=linked)


# What the GPU steps import: conftest.py, the test modules, the benchmark
# scripts. Then every loaded module's file is checked to lie in the wheel
# folder, the checkout, the machine view or the standard library.
PROBE = r'''
import json, os, sys
import x3d_plugin
from mmaction.utils import register_all_modules
register_all_modules(init_default_scope=True)
import av, mmaction.models, mmcv, mmengine, pytest, torch
from x3d_plugin.apis.benchmark import BASELINE, build_pair
from x3d_plugin.models import VARIANTS, X3D
from x3d_plugin.ops import ChannelwiseConv3d, triton_channelwise_available
from x3d_plugin.utils.malloc import keep_freed_memory
roots = [os.path.abspath(p) for p in sys.argv[1:]]
# torch.ops and torch.classes carry a bare file name, not a path.
stray = sorted(
    f'{name}: {m.__file__}' for name, m in list(sys.modules.items())
    if os.path.isabs(getattr(m, '__file__', None) or '')
    and not any(m.__file__.startswith(r + os.sep) for r in roots))
print(json.dumps(dict(
    stray=stray, modules=len(sys.modules),
    x3d_plugin=x3d_plugin.__file__, mmaction=mmaction.__file__,
    mmcv=mmcv.__version__, mmengine=mmengine.__version__,
    av=av.__version__, torch=torch.__file__, path=sys.path)))
'''


@pytest.mark.slow
def test_x3d_plugin_imports_from_the_wheel_set_beside_torch(local_set):
    import json
    target, view = local_set['target'], local_set['view']
    assert 'torch' in local_set['linked']
    # Nothing of the stack sits in the imitated machine.
    assert not {'mmengine', 'mmaction2', 'mmcv_lite', 'av'} & local_set[
        'linked']
    stdlib = sysconfig.get_paths()['stdlib']
    done = subprocess.run(
        [sys.executable, '-S', '-c', PROBE, str(target), str(ROOT),
         str(view), stdlib],
        capture_output=True, text=True, cwd=target.parent,
        env=bare_env(target, ROOT, view))
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen['stray'] == []
    assert not any('site-packages' in p for p in seen['path'])
    assert seen['x3d_plugin'] == str(ROOT / 'x3d_plugin' / '__init__.py')
    assert seen['mmaction'].startswith(str(target))
    assert seen['torch'].startswith(str(view))
    pins = gw.stack_pins()
    assert (seen['mmengine'], seen['mmcv'], seen['av']) == (
        pins['mmengine'], pins['mmcv_lite'], pins['av'])
    assert seen['modules'] > 1000


@pytest.mark.slow
def test_gpu_tests_collect_and_scripts_start_from_the_wheel_set(local_set):
    """The test files gpu_tables.sh runs are collected (conftest.py and the
    modules import) and a benchmark script runs, in the bare setting."""
    target, view = local_set['target'], local_set['view']
    env = bare_env(target, ROOT, view)
    done = subprocess.run(
        [sys.executable, '-S', '-m', 'pytest', '--collect-only', '-q',
         '-p', 'no:cacheprovider', 'tests/ops/test_triton_channelwise.py',
         'tests/ops/test_channelwise_conv3d.py'],
        capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert 'error' not in done.stdout.lower()
    collected = int(done.stdout.strip().splitlines()[-1].split()[0])
    assert collected > 50
    done = subprocess.run(
        [sys.executable, '-S', 'tools/benchmark/gpu_op_speed.py',
         '--list-shapes', '--archs', 'm'],
        capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'X3D-M b16' in done.stdout


@pytest.mark.slow
def test_gpu_tables_installs_the_wheels_before_its_steps(local_set,
                                                         tmp_path):
    """gpu_tables.sh with the wheel folder on a machine without the stack:
    it installs the set, imports x3d_plugin from the checkout (every step
    skipped: TOTAL_S=0)."""
    view = local_set['view']
    env = bare_env(view)
    env.update(PYTHON=f'{sys.executable} -S', WHEELS=str(local_set['wheels']),
               OUT=str(tmp_path / 'out'), TOTAL_S='0', TMPDIR=str(tmp_path))
    done = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'benchmark' / 'gpu_tables.sh')],
        capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    count = len(list(local_set['wheels'].glob('*.whl')))
    assert f'== wheels: {count} from {local_set["wheels"]}/' in done.stdout
    versions = (tmp_path / 'out' / 'versions.txt').read_text()
    pins = gw.stack_pins()
    assert f'x3d_plugin {x3d_version()} from {ROOT / "x3d_plugin"} ' \
        in versions
    assert f'mmaction2 {pins["mmaction2"]} mmcv {pins["mmcv_lite"]} ' \
        f'mmengine {pins["mmengine"]}' in versions
    assert done.stdout.count(': skipped') == 5
    # The install folder is removed on exit.
    assert not list(tmp_path.glob('x3d_site.*'))


@pytest.mark.slow
def test_gpu_tables_refuses_a_torch_wheel(local_set, tmp_path):
    wheels = tmp_path / 'whl'
    wheels.mkdir()
    (wheels / 'torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl').touch()
    env = bare_env(local_set['view'])
    env.update(PYTHON=f'{sys.executable} -S', WHEELS=str(wheels),
               OUT=str(tmp_path / 'out'), TOTAL_S='0')
    done = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'benchmark' / 'gpu_tables.sh')],
        capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "the machine's own" in done.stdout


def x3d_version():
    spec = importlib.util.spec_from_file_location(
        'x3d_version', ROOT / 'x3d_plugin' / 'version.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.__version__


def python312():
    """A CPython 3.12 interpreter here that runs (a pyenv shim on PATH may
    not), or None."""
    candidates = sorted(glob.glob(
        os.path.expanduser('~/.pyenv/versions/3.12*/bin/python3.12')))
    candidates.append(shutil.which('python3.12'))
    for python in filter(None, candidates):
        done = subprocess.run(
            [python, '-c', 'import sys; print(sys.version_info[:2])'],
            capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == '(3, 12)':
            return python
    return None


@pytest.mark.slow
def test_cp312_set_fits_and_installs(index, tmp_path):
    """The set the GPU machine gets (CPython 3.12, x86-64): one wheel per
    package, within 64 MiB with the checkout, installable by a Python 3.12
    without an index; its compiled and pure packages that need no torch
    import there."""
    python = python312()
    if python is None:
        pytest.skip('no python3.12 here (PATH, ~/.pyenv) to install the '
                    'cp312 set with')
    report = gw.build(tmp_path / 'whl', python_version='3.12')
    files = sorted(p.name for p in (tmp_path / 'whl').glob('*.whl'))
    assert len(files) == len(gw.WHEELS) == len(report['wheels'])
    assert [f for f in files if f.startswith('av-')][0].split('-')[2] in (
        'cp312', 'cp311', 'cp310', 'cp39', 'cp38')  # abi3 from these
    assert report['total_bytes'] <= gw.LIMIT_MIB * 2**20
    assert report['checkout_bytes'] > 0
    target = tmp_path / 'site'
    names = install([python], tmp_path / 'whl', target)
    assert {'mmengine', 'mmaction', 'mmcv', 'av', 'yapf'} <= names
    assert not {'torch', 'triton', 'numpy'} & names
    done = subprocess.run(
        [python, '-S', '-c',
         'import av, addict, termcolor, yapf, platformdirs, '
         'importlib_metadata, pkg_resources; print(av.__version__)'],
        capture_output=True, text=True, env=bare_env(target))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == gw.stack_pins()['av']


def test_too_large_a_set_is_refused_and_the_folder_kept(index, tmp_path):
    dest = tmp_path / 'whl'
    dest.mkdir()
    (dest / 'addict-2.4.0-py3-none-any.whl').write_bytes(b'old')
    small = [name for name, _, _ in gw.WHEELS if name != 'addict']
    done = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'benchmark' / 'gpu_wheels.py'),
         '--dest', str(dest), '--limit-mib', '0.01', '--exclude', *small],
        capture_output=True, text=True)
    assert done.returncode == 2
    assert 'over the 0.01 MiB limit' in done.stderr
    assert '| addict-2.4.0-py3-none-any.whl |' in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ['whl']  # no staging
    assert (dest / 'addict-2.4.0-py3-none-any.whl').read_bytes() == b'old'


def test_a_set_that_fits_replaces_the_old_wheels(index, tmp_path):
    dest = tmp_path / 'whl'
    dest.mkdir()
    (dest / 'addict-2.3.0-py3-none-any.whl').write_bytes(b'old')
    small = [name for name, _, _ in gw.WHEELS
             if name not in ('addict', 'termcolor')]
    report = gw.build(dest, python_version=LOCAL_PYTHON, exclude=small)
    assert sorted(p.name for p in dest.iterdir()) == [
        'addict-2.4.0-py3-none-any.whl', 'termcolor-3.3.0-py3-none-any.whl']
    assert report['wheel_bytes'] == sum(p.stat().st_size
                                        for p in dest.iterdir())


def test_requirements_pin_the_stack_exactly():
    reqs = gw.requirements()
    names = [gw.normalize(r.split('==')[0]) for r in reqs]
    assert len(names) == len(set(names)) == len(gw.WHEELS)
    assert not set(names) & {'torch', 'triton'}
    pins = gw.stack_pins()
    assert pins['mmengine'] == '0.10.7'
    for req in reqs:
        name, version = req.split('==')
        if gw.normalize(name) in pins:
            assert version == pins[gw.normalize(name)], req
    assert {'mmengine', 'mmcv_lite', 'mmaction2', 'av'} <= set(names)


def test_requirements_refuse_torch_and_unpinned(tmp_path):
    stack = tmp_path / 'stack.txt'
    stack.write_text('mmengine==0.10.7  # pinned\nsetuptools>=77,<81\n')
    assert gw.requirements((('mmengine', None, ''), ), stack) == [
        'mmengine==0.10.7']
    with pytest.raises(gw.WheelSetError, match='setuptools has no exact pin'):
        gw.requirements((('setuptools', None, ''), ), stack)
    with pytest.raises(gw.WheelSetError, match="machine's own torch"):
        gw.requirements((('torch', '2.11.0', ''), ), stack)
    with pytest.raises(gw.WheelSetError, match='--exclude decord'):
        gw.build(tmp_path / 'whl', exclude=['decord'])


def test_one_wheel_per_package(tmp_path):
    reqs = ['av==18.1.0', 'mmcv-lite==2.1.0', 'yapf==0.43.0']
    wheels = [tmp_path / n for n in (
        'av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl',
        'av-17.0.0-cp312-cp312-manylinux_2_28_x86_64.whl',
        'mmcv_lite-2.1.0-py2.py3-none-any.whl',
        'addict-2.4.0-py3-none-any.whl')]
    with pytest.raises(gw.WheelSetError) as err:
        gw.check_one_each(wheels, reqs)
    message = str(err.value)
    assert 'av: 2 wheels' in message
    assert 'yapf: no wheel' in message
    assert 'addict: not in the set' in message
    assert 'mmcv_lite' not in message
    gw.check_one_each(wheels[:1] + wheels[2:3], reqs[:2])


def test_checkout_size_counts_what_travels(tmp_path, tmp_path_factory):
    """Tracked and untracked-but-not-ignored files count, ignored ones do
    not, except a shared/ folder, which travels; the wheel folder is
    counted apart."""
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@t']
    subprocess.run(git + ['init', '-q', str(tmp_path)], check=True)
    files = {'tracked.py': 10, '.gitignore': 0, 'untracked.txt': 20,
             'ignored/big.bin': 1000, 'shared/clip.mp4': 300,
             '.whl/av.whl': 5000}
    (tmp_path / '.gitignore').write_text('/ignored/\n/shared/\n')
    files['.gitignore'] = len('/ignored/\n/shared/\n')
    for name, size in files.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        if name != '.gitignore':
            path.write_bytes(b'x' * size)
    subprocess.run(git + ['add', 'tracked.py', '.gitignore'], cwd=tmp_path,
                   check=True)
    got = gw.checkout_files(tmp_path, skip=(tmp_path / '.whl', ))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in got) == [
        '.gitignore', 'shared/clip.mp4', 'tracked.py', 'untracked.txt']
    assert gw.total_size(got) == 10 + 20 + 300 + files['.gitignore']
    with pytest.raises(gw.WheelSetError, match='git ls-files failed'):
        gw.checkout_files(tmp_path_factory.mktemp('not_a_checkout'))
