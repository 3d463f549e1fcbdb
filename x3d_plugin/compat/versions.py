"""The oldest torch, MMEngine and MMAction2 the plugin works with.

``import x3d_plugin`` on an older one stops with one line naming the version
needed (:class:`UnsupportedVersionError`), instead of failing later at an
attribute the old version lacks. The floors are what the code uses:
torch 2.6 (``torch.library.custom_op``, weights-only loading by default and
``add_safe_globals`` with ``(function, name)`` pairs), MMEngine 0.10.7 and
MMAction2 1.2.0 (the tested stack; setup.cfg states the same ranges).
"""
from importlib import metadata

__all__ = ['MINIMUM_VERSIONS', 'MissingMMCVError', 'UnsupportedVersionError',
           'check_versions', 'require_mmcv']

# distribution -> (oldest supported, first unsupported or None)
MINIMUM_VERSIONS = {
    'torch': ((2, 6), None),
    'mmengine': ((0, 10, 7), (0, 11)),
    'mmaction2': ((1, 2, 0), (1, 3)),
}


class UnsupportedVersionError(ImportError):
    """An installed dependency older (or newer) than the plugin supports."""


class MissingMMCVError(ImportError):
    """Neither ``mmcv`` nor ``mmcv-lite`` is installed."""


def _release(version: str) -> tuple:
    """(2, 13, 0) from '2.13.0+cpu', '2.6.0a0', '1.2.0rc1'."""
    parts = []
    for piece in version.split('+')[0].split('.'):
        digits = ''
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):
            break
    return tuple(parts)


def _dotted(release: tuple) -> str:
    return '.'.join(map(str, release))


def check_versions(installed: dict = None) -> None:
    """Raise :class:`UnsupportedVersionError` naming the first dependency
    outside its supported range.

    Args:
        installed (dict, optional): ``{distribution: version}`` to check
            instead of the installed distributions (for tests).
    """
    for name, (oldest, first_unsupported) in MINIMUM_VERSIONS.items():
        if installed is not None:
            version = installed.get(name)
        else:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                version = None  # not installed: its import fails by itself
        if version is None:
            continue
        release = _release(version)
        wanted = f'{name}>={_dotted(oldest)}'
        if first_unsupported is not None:
            wanted += f',<{_dotted(first_unsupported)}'
        if release < oldest or (first_unsupported is not None
                                and release >= first_unsupported):
            raise UnsupportedVersionError(
                f'x3d_plugin needs {wanted} and found {name} {version}; '
                f'install a supported one, e.g. `pip install "{wanted}"`.')


def require_mmcv() -> None:
    """Raise :class:`MissingMMCVError` when no mmcv is installed.

    mmcv is not an install requirement: ``mmcv`` and ``mmcv-lite`` both
    provide it and clash when both are installed.
    """
    try:
        import mmcv  # noqa: F401
    except ImportError as err:
        missing = getattr(err, 'name', None)
        if missing and missing.split('.')[0] != 'mmcv':
            raise MissingMMCVError(
                f'mmcv is installed but does not import: it needs '
                f'{missing!r}, which is missing; install it (`pip install '
                f'{missing.split(".")[0]}`) or reinstall mmcv with its '
                'dependencies.') from err
        raise MissingMMCVError(
            'x3d_plugin needs mmcv (MMAction2 1.2.0 takes 2.0.0rc4 <= mmcv < '
            '2.2.0) and found none. Install one of them: '
            '`pip install mmcv-lite==2.1.0` (pure Python, enough for '
            'recognition) or, for compiled ops (e.g. RoIAlign), '
            '`mim install "mmcv==2.1.0"`.') from err
