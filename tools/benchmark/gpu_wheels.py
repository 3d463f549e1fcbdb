"""Download the wheels that ``tools/benchmark/gpu_tables.sh`` needs on a GPU
machine that has Python, PyTorch and Triton but none of the OpenMMLab stack
and no package index.

The set is PyAV, MMEngine, mmcv-lite, MMAction2 and the small pure-Python
packages they import that such a machine lacks (:data:`WHEELS`). Never torch
or Triton: the GPU run uses the machine's own. The packages assumed to be
there already are those of a PyTorch image with the scientific stack
(:data:`ASSUMED_PRESENT`); ``tests/tools/test_gpu_wheels.py`` imports
``x3d_plugin`` from the downloaded set beside exactly those.

Versions are exact: the ``==`` pins of ``requirements/stack.txt`` where it has
one, else the pin in :data:`WHEELS`. Each package comes in one version
(``pip install --no-index --no-deps`` stops at two). The wheels go to a
git-ignored folder (default ``.whl/`` at the repository root), replacing the
wheels there. A machine that takes a size limit on the files sent with it
(checkout plus wheels) is guarded by ``--limit-mib``: a set that would pass
it with the checkout (``git ls-files -co --exclude-standard``, the files that
are tracked or untracked and not ignored, plus ``shared/`` if the checkout
has one) is refused with a non-zero exit and the old folder is left as it
was. pip's cache keeps the downloads, so a second run fetches only the index
pages.

Example::

    python tools/benchmark/gpu_wheels.py                  # cp312, x86-64
    python tools/benchmark/gpu_wheels.py --python-version 3.11 --dest /tmp/w
    # on the GPU machine, with .whl/ sent along:
    bash tools/benchmark/gpu_tables.sh    # installs .whl/ first
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / 'requirements' / 'stack.txt'

# (distribution, exact version or None for requirements/stack.txt's pin,
#  why it is needed). Versions without a stack.txt pin are those the CPU
# stack is tested with.
WHEELS = (
    ('mmengine', None, 'x3d_plugin registers into it'),
    ('mmcv-lite', None, 'mmcv.cnn, imported by mmaction.models'),
    ('mmaction2', None, 'the recognizer, data pipeline and registries'),
    # The GPU tables decode no video; a data-loading run there does.
    ('av', None, "PyAV: the configs' video decoder"),
    ('addict', '2.4.0', 'imported by mmengine.config'),
    ('termcolor', '3.3.0', 'imported by mmengine.logging'),
    ('yapf', '0.43.0', 'imported by mmengine.config'),
    ('platformdirs', '4.14.9', 'imported by yapf'),
    ('importlib_metadata', None, 'imported by mmaction2, undeclared'),
    ('lazy-importer', '0.1.0', 'imported by importlib_metadata'),
    # setuptools 81 removed pkg_resources, which mmengine imports; the
    # machine's own setuptools may be newer.
    ('setuptools', '80.10.2', 'pkg_resources for mmengine'),
)

# Distributions the GPU machine is expected to have (they are not
# downloaded): torch and Triton with their own requirements, and what
# mmengine, mmcv-lite, mmaction2 and the GPU steps import besides the
# set above. opencv-python-headless provides cv2 there.
ASSUMED_PRESENT = (
    'torch', 'triton', 'numpy', 'scipy', 'pillow', 'pyyaml', 'matplotlib',
    'rich', 'einops', 'packaging', 'opencv-python-headless',
    'pytest', 'ninja', 'zipp', 'pip', 'filelock', 'typing-extensions', 'sympy',
    'networkx', 'jinja2', 'fsspec')

NEVER = ('torch', 'triton')
# x86-64 Linux wheels a glibc 2.28 or newer machine installs; pip matches
# each manylinux_2_N tag exactly, hence the list.
PLATFORMS = tuple(f'manylinux_2_{n}_x86_64' for n in range(28, 16, -1)) + (
    'manylinux2014_x86_64', 'manylinux1_x86_64')
LIMIT_MIB = 64


class WheelSetError(RuntimeError):
    """A wheel set that cannot be used: too large, a missing pin, or not
    one wheel per package."""


def normalize(name):
    """The distribution name as wheel file names and pip compare it.

    Args:
        name (str): A distribution name (``mmcv-lite``, ``PyYAML``).

    Returns:
        str: Lower case, runs of ``-_.`` as one ``_``.
    """
    return re.sub(r'[-_.]+', '_', name).lower()


def stack_pins(path=STACK):
    """The exact (``==``) pins of a requirements file.

    Args:
        path (Path): The requirements file.

    Returns:
        dict: Normalized name to version.
    """
    pins = {}
    for line in Path(path).read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        match = re.fullmatch(r'([A-Za-z0-9_.-]+)\s*==\s*([^\s;]+)', line)
        if match:
            pins[normalize(match[1])] = match[2]
    return pins


def requirements(wheels=WHEELS, stack=STACK):
    """``name==version`` of every wheel of the set.

    Args:
        wheels (tuple): ``(name, version or None, why)`` rows as in
            :data:`WHEELS`.
        stack (Path): The requirements file with the pins for rows whose
            version is None.

    Returns:
        list[str]: One requirement per package.

    Raises:
        WheelSetError: A row without a version has no ``==`` pin in
            ``stack``, or a row names torch or Triton.
    """
    pins = stack_pins(stack)
    reqs = []
    for name, version, _ in wheels:
        if normalize(name) in NEVER:
            raise WheelSetError(
                f'{name} is not part of the wheel set: the GPU run uses the '
                "machine's own torch and Triton")
        if version is None:
            version = pins.get(normalize(name))
            if version is None:
                raise WheelSetError(
                    f'{name} has no exact pin (name==version) in {stack}; '
                    'pin it there or give its version in WHEELS')
        reqs.append(f'{name}=={version}')
    return reqs


def checkout_files(root=ROOT, skip=()):
    """The files that travel with the checkout: tracked, and untracked but
    not ignored (``git ls-files -co --exclude-standard``), plus ``shared/``
    when the checkout has one.

    Args:
        root (Path): The repository root.
        skip (tuple[Path]): Folders whose files are not counted (the
            wheel folder, counted on its own).

    Returns:
        list[Path]: Existing files (links not followed).
    """
    done = subprocess.run(
        ['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=root,
        capture_output=True)
    if done.returncode != 0:
        raise WheelSetError(
            f'git ls-files failed in {root}: the size of what travels is '
            'read from a git checkout.\n' + done.stderr.decode())
    files = {root / name for name in done.stdout.decode().split('\0')
             if name}
    shared = root / 'shared'
    # A link travels as a link: only a real folder adds its files.
    if shared.is_dir() and not shared.is_symlink():
        for folder, _, names in os.walk(shared):
            files.update(Path(folder) / name for name in names)
    skip = [Path(folder).resolve() for folder in skip]
    kept = []
    for path in sorted(files):
        if not os.path.lexists(path):
            continue  # deleted but still tracked
        full = path.parent.resolve() / path.name
        if any(full.is_relative_to(folder) for folder in skip):
            continue
        kept.append(path)
    return kept


def total_size(paths):
    """Bytes of ``paths`` (a link counts as the link, not its target)."""
    return sum(os.lstat(p).st_size for p in paths)


def wheel_name(path):
    """The normalized distribution name of a wheel file."""
    return normalize(Path(path).name.split('-', 1)[0])


def check_one_each(wheels, reqs):
    """One wheel for each requirement and nothing else.

    Args:
        wheels (list[Path]): The downloaded wheel files.
        reqs (list[str]): ``name==version`` requirements.

    Raises:
        WheelSetError: A package is missing, doubled or not asked for.
    """
    want = {normalize(r.split('==')[0]) for r in reqs}
    have = {}
    for wheel in wheels:
        have.setdefault(wheel_name(wheel), []).append(wheel.name)
    problems = [f'{n}: {len(f)} wheels ({", ".join(f)})'
                for n, f in sorted(have.items()) if len(f) > 1]
    problems += [f'{n}: no wheel' for n in sorted(want - set(have))]
    problems += [f'{n}: not in the set ({have[n][0]})'
                 for n in sorted(set(have) - want)]
    if problems:
        raise WheelSetError('the wheel set needs one wheel per package:\n  ' +
                            '\n  '.join(problems))


def download(reqs, dest, python_version, platforms):
    """``pip download`` the binary wheels of ``reqs`` without their
    requirements for ``python_version`` (CPython) on ``platforms``.

    Args:
        reqs (list[str]): ``name==version`` requirements.
        dest (Path): Folder for the wheels.
        python_version (str): Target Python, e.g. ``3.12``.
        platforms (tuple[str]): Target platform tags.

    Raises:
        WheelSetError: pip failed (no such version for these tags, no
            index).
    """
    cmd = [
        sys.executable, '-m', 'pip', 'download', '--no-deps',
        '--only-binary=:all:', '--implementation', 'cp', '--python-version',
        python_version, '--disable-pip-version-check', '-d', str(dest)]
    for platform in platforms:
        cmd += ['--platform', platform]
    done = subprocess.run(cmd + list(reqs), capture_output=True, text=True)
    if done.returncode != 0:
        raise WheelSetError(
            f'pip download failed (exit status {done.returncode}); it needs '
            'the package index, and every pin needs a wheel for Python '
            f'{python_version} on {platforms[0]} or a pure-Python wheel. '
            f'pip said:\n{done.stdout[-2000:]}{done.stderr[-3000:]}')


def build(dest, python_version='3.12', platforms=PLATFORMS,
          limit_mib=LIMIT_MIB, exclude=(), root=ROOT, wheels=WHEELS,
          stack=STACK):
    """Download the wheel set into ``dest`` if it fits beside the checkout.

    The wheels are downloaded into a folder beside ``dest`` first; only a
    complete set that fits replaces the wheels in ``dest``.

    Args:
        dest (Path): The wheel folder.
        python_version (str): Target Python, e.g. ``3.12``.
        platforms (tuple[str]): Target platform tags.
        limit_mib (float): Largest size of checkout plus wheels, in MiB.
        exclude (tuple[str]): Packages of ``wheels`` to leave out.
        root (Path): The repository root whose travelling files count.
        wheels (tuple): The set, as :data:`WHEELS`.
        stack (Path): The requirements file with the stack's pins.

    Returns:
        dict: ``wheels`` (list of (file name, bytes)), ``wheel_bytes``,
        ``checkout_bytes``, ``checkout_files``, ``total_bytes``.

    Raises:
        WheelSetError: The set is too large, incomplete or not
            downloadable, or ``exclude`` names a package not in it.
    """
    dest = Path(dest)
    names = {normalize(name) for name, _, _ in wheels}
    left_out = {normalize(name) for name in exclude}
    if left_out - names:
        raise WheelSetError(
            f'--exclude {" ".join(sorted(left_out - names))}: not in the '
            f'wheel set ({", ".join(sorted(names))})')
    wheels = [w for w in wheels if normalize(w[0]) not in left_out]
    reqs = requirements(wheels, stack)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.', dir=dest.parent))
    try:
        download(reqs, staging, python_version, platforms)
        got = sorted(staging.glob('*.whl'))
        check_one_each(got, reqs)
        checkout = checkout_files(root, skip=(dest, staging))
        sizes = [(w.name, w.stat().st_size) for w in got]
        report = dict(wheels=sizes, wheel_bytes=sum(s for _, s in sizes),
                      checkout_bytes=total_size(checkout),
                      checkout_files=len(checkout))
        report['total_bytes'] = report['wheel_bytes'] + report[
            'checkout_bytes']
        if report['total_bytes'] > limit_mib * 2**20:
            raise WheelSetError(
                f'{format_report(report)}\nthe wheels and the checkout '
                f'together are {mib(report["total_bytes"])} MiB, over the '
                f'{limit_mib:g} MiB limit; {dest} is left as it was. Make '
                'room: delete or ignore large untracked files in the '
                'checkout (git status), or leave out a package the run does '
                'not need (--exclude av: gpu_tables.sh decodes no video).')
        dest.mkdir(exist_ok=True)
        for old in dest.glob('*.whl'):
            old.unlink()
        for wheel in got:
            wheel.rename(dest / wheel.name)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def mib(n):
    """``n`` bytes in MiB, two decimals."""
    return f'{n / 2**20:.2f}'


def format_report(report):
    """The wheel set as a markdown table with the checkout and the total."""
    lines = ['| wheel | MiB |', '| --- | ---: |']
    lines += [f'| {name} | {mib(size)} |' for name, size in report['wheels']]
    lines += [
        f'| all {len(report["wheels"])} wheels | '
        f'{mib(report["wheel_bytes"])} |',
        f'| checkout ({report["checkout_files"]} files) | '
        f'{mib(report["checkout_bytes"])} |',
        f'| together | {mib(report["total_bytes"])} |']
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        '--dest', type=Path, default=ROOT / '.whl',
        help='wheel folder (default: .whl/ at the repository root, which '
        'git ignores)')
    parser.add_argument(
        '--python-version', default='3.12',
        help="the GPU machine's Python (default: 3.12)")
    parser.add_argument(
        '--platform', action='append', dest='platforms',
        help='a platform tag; repeat for several (default: manylinux '
        'x86-64, glibc 2.17 to 2.28)')
    parser.add_argument(
        '--limit-mib', type=float, default=LIMIT_MIB,
        help='largest size of wheels plus checkout in MiB (default: '
        f'{LIMIT_MIB})')
    parser.add_argument(
        '--exclude', nargs='+', default=[], metavar='NAME',
        help='packages of the set to leave out (e.g. av when no video is '
        'decoded)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        report = build(args.dest, args.python_version,
                       tuple(args.platforms or PLATFORMS), args.limit_mib,
                       args.exclude)
    except WheelSetError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(format_report(report))
    print(f'{len(report["wheels"])} wheels for CPython '
          f'{args.python_version} in {args.dest}; within the '
          f'{args.limit_mib:g} MiB limit with the checkout')
    return 0


if __name__ == '__main__':
    sys.exit(main())
