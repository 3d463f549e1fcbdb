"""Checkpoint files read with a check first: a missing, truncated or
damaged file is an error that names it and what to do.

``torch.load`` meets a truncated file with a miniz or pickle error deep in
a traceback and loads a zip archive without checking its CRCs, so a
flipped bit in a tensor loads silently. :func:`load_local_checkpoint`
checks the archive's directory and CRCs first (about a tenth of the load's
time) and raises :class:`CorruptCheckpointError`; a file that holds more
than tensors and MMEngine's training state is refused unless it is
``trusted`` (the runner's own resume). The plugin's runner, its
``Pretrained`` loads, ``init_recognizer`` and the converters read local
files through here; MMEngine's own loader is left as it is.
"""
import builtins
import glob
import os
import os.path as osp
import pickle
import zipfile
import zlib

import torch

__all__ = [
    'CorruptCheckpointError', 'MissingCheckpointError', 'check_checkpoint_file',
    'checkpoint_damage', 'is_local_path', 'load_checkpoint_file',
    'load_local_checkpoint'
]


class MissingCheckpointError(FileNotFoundError):
    """A checkpoint path (given, or read from ``last_checkpoint``) that
    names no file."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file that is truncated or damaged.

    Attributes:
        filename (str): The file.
        reason (str): What is wrong with it.
    """

    def __init__(self, filename: str, reason: str):
        self.filename, self.reason = filename, reason
        others = _other_checkpoints(filename)
        hint = (f' (newest beside it: {", ".join(others)})'
                if others else '')
        super().__init__(
            f'checkpoint {filename!r} is truncated or corrupt ({reason}); '
            f'delete it and resume from or load an earlier one{hint}, or '
            'copy/download it again')


def _other_checkpoints(filename, limit=3):
    """The newest other ``*.pth`` files beside ``filename``."""
    folder = osp.dirname(osp.abspath(filename))
    found = [
        p for p in glob.glob(osp.join(glob.escape(folder), '*.pth'))
        if osp.isfile(p) and not osp.samefile(p, filename)
    ]
    found.sort(key=osp.getmtime, reverse=True)
    return found[:limit]


_ZIP_MAGIC = b'PK\x03\x04'
# torch.save's legacy format, and any pickle of protocol 2 or later.
_PICKLE_PROTO = b'\x80'


def _file_head(filename):
    """Size and first 4 bytes of a file; None if it cannot be read."""
    try:
        size = os.path.getsize(filename)
        with builtins.open(filename, 'rb') as f:
            return size, f.read(4)
    except OSError:
        return None


def _zip_damage(filename, size):
    try:
        with zipfile.ZipFile(filename) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError,
            ValueError) as err:
        return (f'{size} bytes, and its zip directory is missing or '
                f'damaged, as when a write was cut short: {err}')
    if bad is not None:
        return f'record {bad!r} fails its CRC check'
    return None


def checkpoint_damage(filename: str, error: BaseException = None):
    """What is wrong with the checkpoint file ``filename``, or None when it
    looks whole.

    A file of ``torch.save`` (a zip archive) is whole when its zip directory
    is there and every record matches its CRC. Other files are judged with
    the ``error`` that ``torch.load`` raised on them.

    Args:
        filename (str): The file.
        error (BaseException, optional): What ``torch.load`` raised; None
            to check a zip archive before loading it.

    Returns:
        str | None: A short reason.
    """
    head = _file_head(filename)
    if head is None:
        return None
    size, magic = head
    if size == 0:
        return 'the file is empty'
    if magic == _ZIP_MAGIC:
        return _zip_damage(filename, size)
    if error is None:
        return None
    if not magic.startswith(_PICKLE_PROTO):
        return ('neither a torch.save zip archive nor a pickle (it starts '
                f'with {magic!r})')
    if isinstance(error, EOFError):
        return f'{size} bytes of pickle that end early'
    return None


def check_checkpoint_file(filename: str) -> str:
    """``filename`` with ``~`` expanded, after checking that it exists and
    is whole.

    Raises:
        MissingCheckpointError: when there is no such file.
        CorruptCheckpointError: when the file is truncated or damaged.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise MissingCheckpointError(
            f'checkpoint {filename!r} does not exist; check the path given '
            'to load_from / --checkpoint / init_cfg.checkpoint.')
    damage = checkpoint_damage(filename)
    if damage is not None:
        raise CorruptCheckpointError(filename, damage)
    return filename


def load_local_checkpoint(filename: str, map_location=None,
                          trusted: bool = False):
    """Load a local checkpoint after checking it.

    Args:
        filename (str): Path of the checkpoint.
        map_location (str | callable, optional): As for :func:`torch.load`.
        trusted (bool): Unpickle anything (for the training state a run
            wrote itself, as ``resume`` reads it). Otherwise the file is
            loaded weights-only: tensors, containers and the types MMEngine's
            runner writes (:mod:`x3d_plugin.compat.weights_only`).

    Returns:
        dict: The loaded object.

    Raises:
        MissingCheckpointError: when there is no such file.
        CorruptCheckpointError: when the file is truncated or damaged.
        RuntimeError: when an untrusted file holds other objects.
    """
    from x3d_plugin.compat.weights_only import runner_checkpoint_safe_globals
    filename = check_checkpoint_file(filename)
    try:
        if trusted:
            return torch.load(filename, map_location=map_location,
                              weights_only=False)
        # Only what is not allowed yet: leaving the block removes what it
        # added, and the weights_only shim may have added them for good.
        allowed = torch.serialization.get_safe_globals()
        with torch.serialization.safe_globals([
                g for g in runner_checkpoint_safe_globals()
                if g not in allowed
        ]):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except Exception as err:
        damage = checkpoint_damage(filename, err)
        if damage is not None:
            raise CorruptCheckpointError(filename, damage) from err
        if not isinstance(err, pickle.UnpicklingError):
            raise
        raise RuntimeError(
            f'{filename!r} holds objects other than tensors and MMEngine '
            'training state, so it is not loaded weights-only. If you wrote '
            'it with this runner, continue it with --resume; if it is a '
            'PySlowFast, PyTorchVideo or MMAction2 X3D checkpoint, convert '
            'it with tools/convert_checkpoint.py first.\n'
            f'torch said: {err}') from err


def is_local_path(filename: str, backend_args: dict = None) -> bool:
    """Whether MMEngine would read or write ``filename`` on the local disk."""
    from mmengine.fileio import LocalBackend, get_file_backend
    if filename.startswith('pavi://'):
        return False
    return isinstance(
        get_file_backend(filename, backend_args=backend_args), LocalBackend)


def load_checkpoint_file(filename: str, map_location=None):
    """A local file through :func:`load_local_checkpoint`, any other URI
    (``http://``, ``s3://`` ...) through MMEngine's loader."""
    if is_local_path(filename):
        return load_local_checkpoint(filename, map_location)
    from mmengine.runner.checkpoint import _load_checkpoint
    return _load_checkpoint(filename, map_location=map_location)
