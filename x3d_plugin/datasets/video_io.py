"""What every part of the video code needs: the decoder packages (with a
clear error when one is missing), the first video stream of a file, the
one-line reason of an error, and the size at a given short side.

An error of the environment (a decoder package that is not installed or
does not load) is never a fact about a video: the loaders raise it in every
``on_error`` mode instead of skipping the video, and the tools stop on it
instead of listing the video as unreadable
(:func:`raise_if_environment_error`).
"""
import importlib
from typing import Tuple

# The packages the video code imports and how to install each.
INSTALL_COMMANDS = {
    'av': 'pip install av',
    'decord': 'pip install decord',
    'cv2': 'pip install opencv-python',
}


class VideoDecodeError(RuntimeError):
    """A video that cannot be opened or decoded."""


class MissingPackageError(ImportError):
    """A package the video code needs is not installed or does not load."""


def require(package: str):
    """Import ``package`` (one of :data:`INSTALL_COMMANDS`) and return it;
    a :class:`MissingPackageError` naming the package and its install
    command if it is missing or fails to load (e.g. a missing shared
    library of its compiled part)."""
    try:
        return importlib.import_module(package)
    except (ImportError, OSError) as err:
        raise missing_package_error(err, package) from err


def missing_package_error(err: BaseException,
                          package: str = '') -> MissingPackageError:
    """A :class:`MissingPackageError` for ``err``, an import that failed;
    ``package`` defaults to the module the error names."""
    package = package or (getattr(err, 'name', None) or '').split('.')[0]
    if not package:
        return MissingPackageError(
            'a package needed to read videos cannot be imported '
            f'({error_reason(err)}); install it or repair the environment.')
    command = INSTALL_COMMANDS.get(package, f'pip install {package}')
    return MissingPackageError(
        f'the package {package!r} is needed to read videos but cannot be '
        f'imported ({error_reason(err)}). Install it with `{command}`.',
        name=package)


def raise_if_environment_error(err: BaseException) -> None:
    """Raise ``err`` if it comes from the environment (a package that is
    missing or does not load: an ``ImportError``) and not from the video
    being read; as a :class:`MissingPackageError` naming the install
    command. Call it where a video's errors are caught."""
    if isinstance(err, MissingPackageError):
        raise err
    if isinstance(err, ImportError):
        raise missing_package_error(err) from err


def error_reason(err: BaseException, max_len: int = 200) -> str:
    """``'TypeName: first line of the message'``, at most ``max_len``
    characters: the reason of a failure as one line of a log or report."""
    lines = f'{type(err).__name__}: {err}'.strip().splitlines()
    return lines[0][:max_len]


def first_video_stream(container):
    """The first video stream of an opened PyAV container; a
    :class:`VideoDecodeError` if there is none or it has no frame size."""
    if not container.streams.video:
        raise VideoDecodeError('no video stream')
    stream = container.streams.video[0]
    if not stream.width or not stream.height:
        raise VideoDecodeError('video stream has no frame size')
    return stream


def probe_size(filename: str) -> Tuple[int, int]:
    """(height, width) of the first video stream of ``filename``, read from
    the container header without decoding a frame."""
    av = require('av')
    with av.open(filename) as container:
        stream = first_video_stream(container)
        return stream.height, stream.width


def scaled_size(height: int, width: int, short_side: int) -> Tuple[int, int]:
    """(height, width) with the short side at ``short_side`` and the aspect
    ratio kept, rounded as ``mmcv.rescale_size`` (MMAction2's ``Resize``)
    rounds."""
    scale = short_side / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)
