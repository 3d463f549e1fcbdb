"""Shims for the pinned OpenMMLab stack, applied once on ``import x3d_plugin``.

Every work-around for a defect of a pinned dependency lives here, so a user
of the plugin never meets the defect and a maintainer finds all of them in one
file. Each shim is idempotent and leaves a working upstream alone.

1. The mmaction2 1.2.0 wheel lacks ``mmaction/models/localizers/drn`` (mmaction2
   issue 2714), so ``import mmaction.models`` fails. A placeholder module is
   installed for the missing package only when it really is missing; building
   ``DRN`` then fails with a message saying why.
2. torch >= 2.6 loads checkpoints with ``weights_only=True``; MMEngine 0.10.7
   calls ``torch.load`` without the argument, so loading a checkpoint written by
   its own runner fails on ``HistoryBuffer``. Local checkpoints are now loaded
   weights-only with an allow-list of exactly the types MMEngine's runner writes
   (``HistoryBuffer`` and numpy arrays/scalars), which covers pretrained weights,
   converted checkpoints and ``load_from=`` of a runner checkpoint. Only
   ``Runner.resume`` -- which reads back the user's own training state, where
   hooks may have stored arbitrary objects -- loads with full unpickling.
3. MMEngine's ``_init_dist_pytorch`` calls ``torch.cuda.set_device`` even on a
   CPU-only torch, and its DDP wrapper passes ``device_ids=[local_rank]``,
   which DDP refuses for CPU modules. Without CUDA the process group uses
   ``gloo`` and DDP gets ``device_ids=None``; with CUDA nothing changes.
4. mmcv-lite's ``mmcv.cnn`` warns on import about a compiled op it lacks and
   that no recognizer here uses; that one warning is filtered.
5. ``mmcv`` is not an install requirement (``mmcv`` and ``mmcv-lite`` both
   provide it and clash when both are installed); when neither is there,
   ``import x3d_plugin`` fails with :class:`MissingMMCVError`, which says
   which to install.
6. MMEngine writes checkpoints and ``last_checkpoint`` in place, so a kill or
   a full disk while saving leaves a truncated file where the last good one
   was, and ``CheckpointHook`` deletes the oldest (or the previous best)
   checkpoint *before* writing the new one. Local checkpoints
   (``save_checkpoint`` in ``mmengine.runner`` and its ``checkpoint`` and
   ``runner`` modules) and ``last_checkpoint`` are now written to a temporary
   file in the same directory, fsync'ed and renamed over the target
   (:func:`write_file_atomically`); the hook's deletions run after the new
   file is in place; a full disk raises :class:`CheckpointWriteError`, which
   names the file. Other storage backends are left to MMEngine.
7. ``torch.load`` meets a truncated or damaged file with a miniz or pickle
   error deep in a traceback, and loads a zip archive without checking its
   CRCs. Local loads check the archive's directory and CRCs first and raise
   :class:`CorruptCheckpointError` for a damaged file (also for one that
   ``torch.load`` fails on and that is empty or no checkpoint at all),
   naming the file, what is wrong and the newest checkpoints beside it.
8. ``resume=True`` without ``load_from`` (``--resume`` without a path) in a
   work directory without ``last_checkpoint`` logs "Auto resumed from the
   latest checkpoint None." and trains from scratch. It now says in one line
   that there is no checkpoint to resume and training starts from scratch;
   a ``last_checkpoint`` naming a missing file, or an empty one, is an error
   saying which checkpoint to pass instead.
9. Action detection (:mod:`x3d_plugin.compat_detection`): MMDetection,
   which MMAction2's AVA detector is built from, imports ``mmcv.ops``, which
   needs the compiled ``mmcv._ext`` that mmcv-lite lacks; with MMDetection
   installed and no compiled ops a placeholder takes its place whose
   functions raise a clear error when called (the AVA configs call none:
   their RoIAlign is plain PyTorch). MMAction2's AVA evaluation gets a
   process pool that is not forked from the (threaded) evaluating process
   and is closed after use. Applied first, before anything imports
   ``mmcv.cnn`` or ``mmaction.models``.
"""
import builtins
import contextlib
import contextvars
import errno
import glob
import importlib.util
import io
import os
import os.path as osp
import pickle
import secrets
import sys
import types
import warnings
import zipfile
import zlib

import torch

_APPLIED = False
# True while Runner.resume runs: the checkpoint is the runner's own output.
_TRUSTED_LOAD = contextvars.ContextVar('x3d_plugin_trusted_load', default=False)


def _install_drn_placeholder():
    try:
        spec = importlib.util.find_spec('mmaction.models.localizers.drn')
    except ModuleNotFoundError:
        spec = None
    if spec is not None or 'mmaction.models.localizers.drn.drn' in sys.modules:
        return

    class DRN:  # noqa: D401 - a placeholder, not a model
        """Placeholder: the mmaction2 1.2.0 wheel does not ship DRN."""

        def __init__(self, *args, **kwargs):
            raise ImportError(
                'DRN is missing from the installed mmaction2 wheel '
                '(mmaction2 issue 2714); install mmaction2 from source to '
                'use it.')

    package = types.ModuleType('mmaction.models.localizers.drn')
    package.__path__ = []
    module = types.ModuleType('mmaction.models.localizers.drn.drn')
    module.DRN = DRN
    package.drn = module
    sys.modules[package.__name__] = package
    sys.modules[module.__name__] = module


def _history_buffer_getattr(owner, name):
    """The one ``getattr`` a runner checkpoint needs: HistoryBuffer pickles
    its statistics methods (``min``, ``max``, ``current``, ``mean``) as
    ``getattr(HistoryBuffer, name)``. Anything else is refused, which keeps
    the weights-only guarantee."""
    from mmengine.logging.history_buffer import HistoryBuffer
    if (owner is HistoryBuffer and not name.startswith('_')
            and callable(getattr(HistoryBuffer, name, None))):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({owner!r}, {name!r}) is not allowed in a checkpoint')


def _runner_checkpoint_safe_globals():
    """Types found in checkpoints written by MMEngine's runner."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in 'bBhHiIlLqQefdgFDG?']
    return [
        HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype,
        *dtype_classes, (_history_buffer_getattr, 'builtins.getattr')
    ]


def load_local_checkpoint(filename, map_location=None):
    """Load a local checkpoint the way :mod:`x3d_plugin` allows (see above).

    Args:
        filename (str): Path of the checkpoint.
        map_location (str | callable, optional): As for :func:`torch.load`.

    Returns:
        dict: The loaded object.

    Raises:
        MissingCheckpointError: when there is no such file.
        CorruptCheckpointError: when the file is truncated or damaged.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise MissingCheckpointError(
            f'checkpoint {filename!r} does not exist; check the path given '
            'to load_from / --checkpoint / init_cfg.checkpoint.')
    # Reading the CRCs costs about a tenth of the load itself.
    damage = checkpoint_damage(filename)
    if damage is not None:
        raise CorruptCheckpointError(filename, damage)
    try:
        if _TRUSTED_LOAD.get():
            return torch.load(filename, map_location=map_location,
                              weights_only=False)
        with torch.serialization.safe_globals(
                _runner_checkpoint_safe_globals()):
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
    is there and every record matches its CRC (``torch.load`` checks
    neither, so a flipped bit in a tensor loads silently). Other files are
    judged with the ``error`` that ``torch.load`` raised on them.

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


def write_file_atomically(data, filename: str) -> None:
    """Write ``data`` to ``filename`` so that the file holds either its old
    content or all of ``data``, whatever happens meanwhile.

    The bytes go to a hidden temporary file in the same directory (so the
    rename cannot cross file systems), are flushed and fsync'ed, and the
    file is renamed over ``filename``; the directory is fsync'ed so the
    rename itself survives a power cut. A failed write removes the temporary
    file; a killed one leaves it, and the next write of the same file
    removes it.

    Args:
        data (bytes | str | memoryview): The content; ``str`` is UTF-8.
        filename (str): The target.

    Raises:
        CheckpointWriteError: when the disk (or the quota, or the
            file-size limit) is full; ``filename`` is untouched.
    """
    if isinstance(data, str):
        data = data.encode('utf-8')
    filename = osp.abspath(filename)
    folder, name = osp.split(filename)
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temporaries(folder, name)
    temp = osp.join(folder, f'.{name}.{os.getpid()}-{secrets.token_hex(4)}'
                    '.tmp')
    # os.open with 0o666 keeps the umask's permissions, as open() does.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, filename)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            raise CheckpointWriteError(err.errno, filename) from err
        raise
    _fsync_directory(folder)


def _remove_stale_temporaries(folder, name):
    """Remove the temporary files of writes of ``name`` by processes of this
    machine that are gone (killed while writing)."""
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


_DISK_FULL = {
    errno.ENOSPC: 'no space left on the device',
    errno.EDQUOT: 'the disk quota is exceeded',
    errno.EFBIG: 'for this process: its file-size limit, `ulimit -f`, is '
    'reached',
}


class CheckpointWriteError(OSError):
    """A checkpoint (or ``last_checkpoint``) not written for want of space;
    the file it was to replace is untouched."""

    def __init__(self, error_number: int, filename: str):
        folder = osp.dirname(filename)
        super().__init__(
            error_number,
            f'checkpoint {filename!r} could not be written: the disk is full '
            f'({_DISK_FULL[error_number]}). Free space in {folder!r} or give '
            '--work-dir on a disk with room, then continue with '
            '`tools/train.py CONFIG --resume`; the checkpoints written '
            'before are untouched.', filename)

    def __str__(self):
        return self.strerror


def _is_local_path(filename, backend_args=None):
    from mmengine.fileio import LocalBackend, get_file_backend
    if filename.startswith('pavi://'):
        return False
    return isinstance(
        get_file_backend(filename, backend_args=backend_args), LocalBackend)


def _patch_checkpoint_saving():
    import mmengine.runner
    from mmengine.hooks import checkpoint_hook
    from mmengine.runner import checkpoint, runner

    original = checkpoint.save_checkpoint
    if getattr(original, '_x3d_plugin_patched', False):
        return

    def save_checkpoint(checkpoint,
                        filename,
                        file_client_args=None,
                        backend_args=None):
        if file_client_args is not None or not _is_local_path(
                filename, backend_args):
            return original(checkpoint, filename, file_client_args,
                            backend_args)
        with io.BytesIO() as buffer:
            torch.save(checkpoint, buffer)
            with buffer.getbuffer() as data:
                write_file_atomically(data, filename)

    save_checkpoint._x3d_plugin_patched = True
    save_checkpoint.__doc__ = original.__doc__
    # Runner.save_checkpoint calls the name it imported into its module;
    # CheckpointHook._publish_model imports it from the package.
    for module in (checkpoint, runner, mmengine.runner):
        module.save_checkpoint = save_checkpoint

    # CheckpointHook writes last_checkpoint with the builtin open(); a module
    # global of that name is found first.
    checkpoint_hook.open = _open_last_checkpoint_atomically
    hook = checkpoint_hook.CheckpointHook
    for name in ('_save_checkpoint_with_step', '_save_best_checkpoint'):
        setattr(hook, name, _removing_after_saving(getattr(hook, name)))


class _AtomicTextFile(io.StringIO):
    """A text file for writing that reaches the disk on a clean close only,
    through :func:`write_file_atomically`."""

    def __init__(self, filename):
        super().__init__()
        self.filename = filename

    def __exit__(self, kind, value, traceback):
        if kind is None:
            write_file_atomically(self.getvalue(), self.filename)
        return super().__exit__(kind, value, traceback)


def _open_last_checkpoint_atomically(file, mode='r', *args, **kwargs):
    if mode == 'w' and osp.basename(str(file)) == 'last_checkpoint':
        return _AtomicTextFile(file)
    return builtins.open(file, mode, *args, **kwargs)


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` are noted, to be done by
    :meth:`apply` once the new checkpoint is safely written."""

    def __init__(self, backend):
        self._backend = backend
        self._noted = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def _identity(self, path):
        try:
            stat = os.stat(path)
        except (OSError, TypeError, ValueError):
            return None
        return stat.st_ino, stat.st_mtime_ns

    def remove(self, path):
        self._noted.append(('remove', path, self._identity(path)))

    def rmtree(self, path):
        self._noted.append(('rmtree', path, self._identity(path)))

    def apply(self):
        for method, path, identity in self._noted:
            # A path written again meanwhile holds the new checkpoint.
            if self._identity(path) == identity:
                getattr(self._backend, method)(path)


def _removing_after_saving(method):
    if getattr(method, '_x3d_plugin_patched', False):
        return method

    def wrapper(self, runner, *args, **kwargs):
        backend = self.file_backend
        deferred = _DeferredRemoval(backend)
        self.file_backend = deferred
        try:
            result = method(self, runner, *args, **kwargs)
        finally:
            self.file_backend = backend
        deferred.apply()
        return result

    wrapper._x3d_plugin_patched = True
    wrapper.__doc__ = method.__doc__
    return wrapper


def _read_last_checkpoint(work_dir):
    """The path in ``work_dir/last_checkpoint``: None without the file."""
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with builtins.open(path) as f:
        return f.read().strip()


def _patch_auto_resume():
    from mmengine.runner import Runner

    original = Runner.load_or_resume
    if getattr(original, '_x3d_plugin_patched', False):
        return

    def load_or_resume(self):
        if not self._has_loaded and self._resume and self._load_from is None:
            latest = _read_last_checkpoint(self.work_dir)
            pointer = osp.join(self.work_dir, 'last_checkpoint')
            if latest is None:
                self.logger.info(
                    f'Resume: no checkpoint in {self.work_dir} (no '
                    'last_checkpoint file), so training starts from scratch.')
                self._resume = False
            elif not latest:
                raise MissingCheckpointError(
                    f'{pointer} is empty, so the checkpoint to resume is '
                    'unknown; pass one with --resume PATH (the newest '
                    f'{osp.basename(self.work_dir)}/*.pth) or delete '
                    f'{pointer} to start from scratch')
            elif _is_local_path(latest) and not osp.isfile(latest):
                raise MissingCheckpointError(
                    f'{pointer} names {latest!r}, which does not exist; pass '
                    'an existing checkpoint with --resume PATH or delete '
                    f'{pointer} to start from scratch')
        return original(self)

    load_or_resume._x3d_plugin_patched = True
    load_or_resume.__doc__ = original.__doc__
    Runner.load_or_resume = load_or_resume


def _patch_checkpoint_loader():
    from mmengine.runner import Runner
    from mmengine.runner.checkpoint import CheckpointLoader

    # The '' prefix is MMEngine's local-file scheme; replacing its entry keeps
    # the scheme order that CheckpointLoader sorted at registration.
    CheckpointLoader._schemes[''] = load_local_checkpoint

    original_resume = Runner.resume
    if getattr(original_resume, '_x3d_plugin_patched', False):
        return

    def resume(self, *args, **kwargs):
        with trusted_checkpoint_loading():
            return original_resume(self, *args, **kwargs)

    resume._x3d_plugin_patched = True
    resume.__doc__ = original_resume.__doc__
    Runner.resume = resume


@contextlib.contextmanager
def trusted_checkpoint_loading():
    """Load local checkpoints with full unpickling inside this block.

    For checkpoints that the caller itself wrote, like ``Runner.resume`` does.
    """
    token = _TRUSTED_LOAD.set(True)
    try:
        yield
    finally:
        _TRUSTED_LOAD.reset(token)


def _patch_cpu_distributed():
    import torch.distributed as torch_dist
    from mmengine.dist import utils as dist_utils
    from mmengine.model.wrappers import MMDistributedDataParallel

    original_init_dist = dist_utils._init_dist_pytorch
    if not getattr(original_init_dist, '_x3d_plugin_patched', False):

        def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
            if torch.cuda.is_available() or init_backend != 'torch':
                return original_init_dist(backend, init_backend, **kwargs)
            if backend == 'nccl':
                backend = 'gloo'  # NCCL needs CUDA; gloo runs on CPU.
            torch_dist.init_process_group(backend=backend, **kwargs)

        _init_dist_pytorch._x3d_plugin_patched = True
        dist_utils._init_dist_pytorch = _init_dist_pytorch

    original_ddp_init = MMDistributedDataParallel.__init__
    if not getattr(original_ddp_init, '_x3d_plugin_patched', False):

        def __init__(self, module, detect_anomalous_params=False, **kwargs):
            on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
            if on_cpu and not torch.cuda.is_available():
                kwargs['device_ids'] = None
                kwargs.pop('output_device', None)
            original_ddp_init(self, module, detect_anomalous_params, **kwargs)

        __init__._x3d_plugin_patched = True
        MMDistributedDataParallel.__init__ = __init__


def _silence_mmcv_lite_warning():
    # mmcv-lite has no compiled ops; mmcv.cnn warns about one of them on every
    # import although nothing in MMAction2's recognizers uses it.
    warnings.filterwarnings(
        'ignore',
        message='Fail to import ``MultiScaleDeformableAttention``',
        category=UserWarning)


class MissingMMCVError(ImportError):
    """Neither ``mmcv`` nor ``mmcv-lite`` is installed."""


def _require_mmcv():
    try:
        import mmcv  # noqa: F401
    except ImportError as err:
        raise MissingMMCVError(
            'x3d_plugin needs mmcv (MMAction2 1.2.0 takes 2.0.0rc4 <= mmcv < '
            '2.2.0) and found none. Install one of them: '
            '`pip install mmcv-lite==2.1.0` (pure Python, enough for '
            'recognition) or, for compiled ops (e.g. RoIAlign), '
            '`mim install "mmcv==2.1.0"`.') from err


def apply():
    """Apply every shim once."""
    global _APPLIED
    if _APPLIED:
        return
    _require_mmcv()
    # Before anything imports mmcv.cnn or mmaction.models (see the module).
    from . import compat_detection
    compat_detection.apply()
    _silence_mmcv_lite_warning()
    _install_drn_placeholder()
    _patch_checkpoint_loader()
    _patch_checkpoint_saving()
    _patch_auto_resume()
    _patch_cpu_distributed()
    _APPLIED = True
