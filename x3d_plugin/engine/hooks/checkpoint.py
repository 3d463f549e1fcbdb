"""``CheckpointHook`` whose files are written whole or not at all."""
import os
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook

from x3d_plugin.registry import HOOKS
from x3d_plugin.utils.checkpoint_file import is_local_path
from x3d_plugin.utils.fileio import (write_file_atomically,
                                     write_last_checkpoint)

# The name under which MMEngine's file I/O finds AtomicLocalBackend
# (``backend_args=dict(backend=ATOMIC_BACKEND)``).
ATOMIC_BACKEND = 'x3d_plugin.atomic_local'


class AtomicLocalBackend(LocalBackend):
    """MMEngine's local-disk backend whose ``put`` and ``put_text`` write a
    temporary file in the same directory, fsync it and rename it over the
    target (:func:`~x3d_plugin.utils.fileio.write_file_atomically`): a kill
    or a full disk leaves the old file, never a truncated one. A full disk
    raises :class:`~x3d_plugin.utils.fileio.CheckpointWriteError`."""

    def put(self, obj, filepath) -> None:
        write_file_atomically(obj, str(filepath))

    def put_text(self, obj, filepath, encoding='utf-8') -> None:
        write_file_atomically(obj.encode(encoding), str(filepath))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend)


def atomic_backend_args(out_dir: str, backend_args: Optional[dict]):
    """``backend_args`` for a checkpoint under ``out_dir``: the atomic
    backend for a local directory when none is given, else as given."""
    if backend_args is None and is_local_path(out_dir):
        return dict(backend=ATOMIC_BACKEND)
    return backend_args


class _DeferredRemoval:
    """A file backend whose ``remove``/``rmtree`` are noted, to be done by
    :meth:`apply` once the new checkpoint is safely written."""

    def __init__(self, backend):
        self._backend = backend
        self._noted = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    @staticmethod
    def _identity(path):
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


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` (same arguments) that never leaves a
    truncated checkpoint or ``last_checkpoint`` and never deletes the
    previous checkpoint before the new one is on disk.

    MMEngine writes both in place, so a kill or a full disk while saving
    leaves a truncated file where the last good one was, and it deletes the
    oldest (or the previous best) checkpoint *before* writing the new one.
    Here, in a local ``out_dir`` without ``backend_args``, checkpoints go
    through :class:`AtomicLocalBackend`, ``last_checkpoint`` is replaced
    atomically, and the deletions ``max_keep_ckpts`` and ``save_best`` ask
    for run after the new file is in place. Other storage backends are left
    to MMEngine.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self.backend_args = atomic_backend_args(self.out_dir,
                                                self.backend_args)

    def _save_checkpoint_with_step(self, runner, step, meta):
        # MMEngine's method, reordered: save, point last_checkpoint at the
        # new file (atomically), then remove what max_keep_ckpts drops.
        drop = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                drop = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        write_last_checkpoint(runner.work_dir, self.last_ckpt)
        if drop is not None:
            path = self.file_backend.join_path(self.out_dir,
                                               self.filename_tmpl.format(drop))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                # checkpoints saved by DeepSpeed are directories
                self.file_backend.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        deferred = _DeferredRemoval(self.file_backend)
        backend, self.file_backend = self.file_backend, deferred
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        deferred.apply()
