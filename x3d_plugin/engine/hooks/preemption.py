"""Save the training state and exit when the job is told to stop (SIGTERM
from SLURM, Kubernetes or ``kill``), so ``--resume`` continues from the
iteration where it stopped."""
import atexit
import functools
import itertools
import logging
import multiprocessing
import os.path as osp
import signal
import threading
from typing import Sequence

import torch
from mmengine.dist import all_reduce, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop

from x3d_plugin.compat import write_file_atomically
from x3d_plugin.registry import HOOKS
from .non_finite_loss import where_in_training

# _kill_workers_at_exit is registered once per process.
_EXIT_HANDLER_REGISTERED = False


class TrainingPreempted(SystemExit):
    """Training stopped on a signal after saving its state; as a
    ``SystemExit`` it ends the process with the hook's ``exit_code``."""


def _kill_workers_at_exit() -> None:
    """Stop data-loader workers with SIGKILL when the process exits.

    multiprocessing's exit handler stops daemonic children with SIGTERM
    and waits for them; the workers ignore SIGTERM (below), so that wait
    would never end for workers still alive at exit (persistent workers,
    or a run ended by an exception). The process is ending, so nothing of
    theirs is needed.
    """
    children = [c for c in multiprocessing.active_children() if c.daemon]
    if not children:
        return
    # PyTorch's SIGCHLD handler would report each killed worker as a
    # failure (an exception in the middle of this handler).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=5)


def _ignore_signals_in_worker(signals, worker_init_fn, worker_id):
    # PyTorch's workers die on SIGTERM, and a dead worker fails the main
    # process's next batch; SLURM signals every process of the job, so the
    # workers must outlive the signal until the main process has saved.
    for name in signals:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if worker_init_fn is not None:
        worker_init_fn(worker_id)


class _ResumedEpochLoader:
    """Stands in for a train loop's data loader for the one epoch that
    resumes inside: the iterator it starts leaves out the first ``count``
    batches without loading them (the index sampler yields them to no one),
    and the loop gets its loader back. Anything else is the loader's."""

    def __init__(self, loop, count: int):
        self._loop, self._loader, self._count = loop, loop.dataloader, count

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __len__(self):
        return len(self._loader)

    def __iter__(self):
        loader, count = self._loader, self._count
        self._loop.dataloader = loader
        sampler = (loader.batch_sampler
                   if loader.batch_sampler is not None else loader.sampler)
        cls = type(sampler)

        class SkipFirst(cls):

            def __iter__(self):
                return itertools.islice(cls.__iter__(self), count, None)

        # DataLoader may iterate its sampler more than once while it starts
        # (once more when it starts workers); every such start is in here.
        try:
            sampler.__class__ = SkipFirst
        except TypeError:
            print_log(
                f'PreemptionHook: cannot leave batches out of a '
                f'{cls.__name__}; the resumed epoch is trained from its '
                'start.',
                logger='current',
                level=logging.WARNING)
            return iter(loader)
        try:
            return iter(loader)
        finally:
            sampler.__class__ = cls


@HOOKS.register_module()
class PreemptionHook(Hook):
    """On SIGTERM (or the ``signals`` given) finish the current training
    iteration, save a checkpoint of the whole training state and exit.

    SLURM sends SIGTERM before it kills a job (preemption, ``scancel``,
    the time limit, or ``--signal=TERM@120`` ahead of it) and Kubernetes
    before it stops a pod. The signal handler only sets a flag; after the
    iteration in progress the state (weights, optimizer, schedulers,
    message hub) is saved as ``iter_{N}.pth`` in the checkpoint directory,
    ``last_checkpoint`` points to it, and the process exits with
    ``exit_code`` (:class:`TrainingPreempted`). ``tools/train.py CONFIG
    --resume`` continues from that iteration: in an epoch-based loop the
    batches the interrupted epoch already trained on are left out, without
    loading them, so every sample is still seen once per epoch (with a fixed
    ``randomness.seed`` the resumed epoch shuffles as the interrupted one
    did).

    Data-loader workers (forked or spawned) ignore the signals, so that a
    signal sent to the whole process group -- as SLURM does -- does not kill
    them before the state is saved. With several processes, all stop after
    the same iteration (one ``all_reduce`` of a flag per iteration), so a
    signal that reaches one process only stops all of them and none waits
    in a collective. A signal during validation takes effect after the next
    training iteration.

    Args:
        signals (Sequence[str]): Names of the signals that ask to stop.
            Defaults to ``('SIGTERM', )``.
        exit_code (int): Exit status after saving. Defaults to 0: the run
            ended as asked and nothing is lost.
    """

    priority = 'LOWEST'  # after CheckpointHook, which may save this iteration

    def __init__(self, signals: Sequence[str] = ('SIGTERM', ),
                 exit_code: int = 0):
        signals = tuple(signals)
        unknown = [s for s in signals
                   if not isinstance(getattr(signal, str(s), None),
                                     signal.Signals)]
        if unknown or not signals:
            raise ValueError(
                f'PreemptionHook: signals must name signals of this '
                f'platform, e.g. (\'SIGTERM\', \'SIGUSR1\'); got {signals}')
        self.signals = signals
        self.exit_code = exit_code
        self.received = None
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def before_train(self, runner) -> None:
        self.received = None
        if threading.current_thread() is threading.main_thread():
            for name in self.signals:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number,
                                                       self._on_signal)
        else:
            runner.logger.warning(
                'PreemptionHook: training runs outside the main thread, '
                'where Python cannot handle signals; it will not save on '
                f'{"/".join(self.signals)}.')
        global _EXIT_HANDLER_REGISTERED
        if not _EXIT_HANDLER_REGISTERED:
            # Registered after multiprocessing's own handler, so it runs
            # first (atexit runs handlers last-in, first-out).
            atexit.register(_kill_workers_at_exit)
            _EXIT_HANDLER_REGISTERED = True
        loops = [runner.train_loop, runner.val_loop]
        for loop in filter(None, loops):
            loader = loop.dataloader
            loader.worker_init_fn = functools.partial(
                _ignore_signals_in_worker, self.signals,
                loader.worker_init_fn)
        self._skip_trained_batches(runner)

    def _skip_trained_batches(self, runner) -> None:
        """After resuming from a checkpoint saved inside an epoch, leave out
        the batches that epoch trained on before it stopped."""
        loop = runner.train_loop
        if not isinstance(loop, EpochBasedTrainLoop):
            return  # IterBasedTrainLoop skips them itself on resume
        per_epoch = len(loop.dataloader)
        done = runner.iter - runner.epoch * per_epoch
        if done <= 0:
            return
        if done > per_epoch:
            runner.logger.warning(
                f'PreemptionHook: resumed at iteration {runner.iter} in '
                f'epoch {runner.epoch + 1}, which does not fit '
                f'{per_epoch} batches per epoch (a different batch size or '
                'number of processes?); the epoch is trained from its start.')
            return
        loop.dataloader = _ResumedEpochLoader(loop, done)
        runner.logger.info(
            f'PreemptionHook: resumed inside epoch {runner.epoch + 1}; its '
            f'first {done} of {per_epoch} batches were trained before the '
            'stop and are left out.')

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        asked = torch.tensor([float(self.received is not None)])
        all_reduce(asked, op='max')
        if not asked.item():
            return
        path = self._save(runner)
        reason = (f'{self.received} received' if self.received else
                  'another process was signalled')
        message = (
            f'PreemptionHook: {reason}; stopped after '
            f'{where_in_training(runner)} with the training state saved to '
            f'{path}. Continue with `tools/train.py CONFIG --resume` (same '
            '--work-dir).')
        runner.logger.warning(message)
        raise TrainingPreempted(self.exit_code)

    def _save(self, runner) -> str:
        checkpoint_hook = next(
            (h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        out_dir = getattr(checkpoint_hook, 'out_dir', None) or runner.work_dir
        backend_args = getattr(checkpoint_hook, 'backend_args', None)
        filename = f'iter_{runner.iter + 1}.pth'
        path = osp.join(out_dir, filename)
        if runner.message_hub.get_info('last_ckpt') == path:
            return path  # CheckpointHook saved this iteration already
        # Recorded before saving, as CheckpointHook does, so the saved
        # message hub knows its own file.
        runner.message_hub.update_info('last_ckpt', path)
        runner.save_checkpoint(
            out_dir,
            filename,
            save_optimizer=True,
            save_param_scheduler=True,
            by_epoch=False,
            backend_args=backend_args)
        if is_main_process():
            write_file_atomically(
                path, osp.join(runner.work_dir, 'last_checkpoint'))
        return path

    def after_train(self, runner) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
