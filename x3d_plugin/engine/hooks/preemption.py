"""Save the training state and exit when the job is told to stop (SIGTERM
from SLURM, Kubernetes or ``kill``), so ``--resume`` continues from the
iteration where it stopped."""
import atexit
import functools
import multiprocessing
import os
import os.path as osp
import signal
import threading
from typing import Sequence

import torch
from mmengine.dist import all_reduce, is_main_process
from mmengine.hooks import CheckpointHook, Hook

from x3d_plugin.registry import HOOKS
from x3d_plugin.utils.fileio import (write_file_atomically,
                                     write_last_checkpoint)
from .checkpoint import atomic_backend_args
from .non_finite_loss import where_in_training

# Written to the work directory (naming the checkpoint) when training stops
# on a signal, removed when training starts: tools/slurm_train.sh requeues
# the job when it finds it.
PREEMPTED_MARKER = 'preempted'


class TrainingPreempted(SystemExit):
    """Training stopped on a signal after saving its state; as a
    ``SystemExit`` it ends the process with the hook's ``exit_code``."""


def _worker_signal_gate(training, signum, frame):
    """A data-loader worker's handler of the stop signals: ignored while
    the main process trains (it saves first, and a dead worker would fail
    its next batch), the default action (stop) once it no longer does."""
    if training.value:
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _gate_signals_in_worker(signals, training, worker_init_fn, worker_id):
    # SLURM signals every process of the job, so the workers must outlive
    # the signal until the main process has saved.
    handler = functools.partial(_worker_signal_gate, training)
    for name in signals:
        signal.signal(getattr(signal, name), handler)
    if worker_init_fn is not None:
        worker_init_fn(worker_id)


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
    ``exit_code`` (:class:`TrainingPreempted`); the file ``preempted`` in
    the work directory names the checkpoint until training starts again
    (``tools/slurm_train.sh`` requeues the job when it is there). ``tools/train.py CONFIG
    --resume`` continues from that iteration (inside the epoch with
    ``x3d_plugin.ResumableEpochBasedTrainLoop``, which ``X3DRunner`` uses).

    Data-loader workers (forked or spawned) ignore the signals while the
    main process trains, so that a signal sent to the whole process group
    -- as SLURM does -- does not kill them before the state is saved; once
    training ends (or raises) they stop on them as usual. With several processes, all stop after
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
        self._training = None
        self._loader_init_fns = []

    def _on_signal(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def before_train(self, runner) -> None:
        self.received = None
        marker = osp.join(runner.work_dir, PREEMPTED_MARKER)
        if is_main_process() and osp.exists(marker):
            os.remove(marker)
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
        # Shared with the workers: 1 while training, so that they ignore
        # the signals only then. Cleared at exit too, should training end
        # without restore_process_state (a runner other than X3DRunner that
        # raised), so multiprocessing's exit handler can stop them.
        self._training = multiprocessing.Value('b', 1, lock=False)
        atexit.register(self.restore_process_state)
        for loop in filter(None, (runner.train_loop, runner.val_loop)):
            loader = loop.dataloader
            self._loader_init_fns.append((loader, loader.worker_init_fn))
            loader.worker_init_fn = functools.partial(
                _gate_signals_in_worker, self.signals, self._training,
                loader.worker_init_fn)

    def restore_process_state(self) -> None:
        """Put back the signal handlers and the loaders' ``worker_init_fn``
        that :meth:`before_train` replaced, let the workers stop on the
        signals again, and drop the exit handler. Called after training,
        whether it returned or raised; calling it again does nothing."""
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
        for loader, init_fn in self._loader_init_fns:
            loader.worker_init_fn = init_fn
        self._loader_init_fns = []
        if self._training is not None:
            self._training.value = 0
            self._training = None
        atexit.unregister(self.restore_process_state)

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
        if is_main_process():
            write_file_atomically(
                path, osp.join(runner.work_dir, PREEMPTED_MARKER))
        self.restore_process_state()
        raise TrainingPreempted(self.exit_code)

    def _save(self, runner) -> str:
        checkpoint_hook = next(
            (h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        out_dir = getattr(checkpoint_hook, 'out_dir', None) or runner.work_dir
        backend_args = atomic_backend_args(
            out_dir, getattr(checkpoint_hook, 'backend_args', None))
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
            write_last_checkpoint(runner.work_dir, path)
        return path

    def after_train(self, runner) -> None:
        self.restore_process_state()
