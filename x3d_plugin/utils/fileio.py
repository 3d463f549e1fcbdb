"""Files written whole or not at all, and the ``last_checkpoint`` pointer.

Every file the package writes that a kill or a full disk must not leave
half-written (checkpoints, ``last_checkpoint``, feature files, re-encoded
videos, exported models, the expansion search's state) goes through
:func:`write_file_atomically` (bytes in memory) or :func:`atomic_path` (a
writer that wants a path of its own). ``last_checkpoint`` -- the file in a
work directory that names the checkpoint to resume -- is read and written
only by :func:`read_last_checkpoint` and :func:`write_last_checkpoint`.
"""
import contextlib
import errno
import glob
import os
import os.path as osp
import secrets
from typing import Iterator, Optional

__all__ = [
    'CheckpointWriteError', 'LAST_CHECKPOINT', 'atomic_path',
    'read_last_checkpoint', 'write_file_atomically', 'write_last_checkpoint'
]

# The name MMEngine's CheckpointHook and Runner use for the pointer file.
LAST_CHECKPOINT = 'last_checkpoint'

_DISK_FULL = {
    errno.ENOSPC: 'no space left on the device',
    errno.EDQUOT: 'the disk quota is exceeded',
    errno.EFBIG: 'for this process: its file-size limit, `ulimit -f`, is '
    'reached',
}


class CheckpointWriteError(OSError):
    """A checkpoint (or another file written whole) not written for want of
    space; the file it was to replace is untouched."""

    def __init__(self, error_number: int, filename: str):
        folder = osp.dirname(filename)
        super().__init__(
            error_number,
            f'{filename!r} could not be written: the disk is full '
            f'({_DISK_FULL[error_number]}). Free space in {folder!r} or give '
            '--work-dir on a disk with room, then continue with '
            '`tools/train.py CONFIG --resume`; the files written before are '
            'untouched.', filename)

    def __str__(self):
        return self.strerror


def _temporary_name(filename: str) -> str:
    folder, name = osp.split(filename)
    return osp.join(folder,
                    f'.{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp')


@contextlib.contextmanager
def atomic_path(filename: str) -> Iterator[str]:
    """A temporary path in ``filename``'s directory to write to; when the
    block ends without an exception the file is fsync'ed and renamed over
    ``filename`` (and the directory fsync'ed), else it is removed.

    A temporary file left by a process that was killed while writing is
    removed by the next write of the same file.

    Args:
        filename (str): The target.

    Yields:
        str: The path to write.

    Raises:
        CheckpointWriteError: when the disk (or the quota, or the file-size
            limit) is full; ``filename`` is untouched.
    """
    filename = osp.abspath(filename)
    folder = osp.dirname(filename)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temporaries(filename)
    temp = _temporary_name(filename)
    try:
        yield temp
        # The writer may have closed without syncing (encoders, savers).
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, filename)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            raise CheckpointWriteError(err.errno, filename) from err
        raise
    _fsync_directory(folder)


def write_file_atomically(data, filename: str) -> None:
    """Write ``data`` to ``filename`` so that the file holds either its old
    content or all of ``data``, whatever happens meanwhile (see
    :func:`atomic_path`).

    Args:
        data (bytes | str | memoryview): The content; ``str`` is UTF-8.
        filename (str): The target.

    Raises:
        CheckpointWriteError: when the disk is full; ``filename`` is
            untouched.
    """
    if isinstance(data, str):
        data = data.encode('utf-8')
    with atomic_path(filename) as temp:
        # O_EXCL: the name is new; 0o666 keeps the umask, as open() does.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)


def read_last_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``work_dir/last_checkpoint`` names: None without
    the file, ``''`` for an empty one."""
    path = osp.join(work_dir, LAST_CHECKPOINT)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip()


def write_last_checkpoint(work_dir: str, checkpoint: str) -> None:
    """Point ``work_dir/last_checkpoint`` at ``checkpoint``, atomically."""
    write_file_atomically(checkpoint, osp.join(work_dir, LAST_CHECKPOINT))


def _remove_stale_temporaries(filename):
    """Remove the temporary files of writes of ``filename`` by processes of
    this machine that are gone (killed while writing)."""
    folder, name = osp.split(filename)
    pattern = osp.join(glob.escape(folder), f'.{glob.escape(name)}.*.tmp')
    for stale in glob.glob(pattern):
        pid = osp.basename(stale)[len(name) + 2:].split('-')[0]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(stale)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _fsync_directory(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not sync directories
    finally:
        os.close(fd)
