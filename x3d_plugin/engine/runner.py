"""The plugin's runner: MMEngine's ``Runner`` with verified checkpoint
loads, clear auto-resume and CPU-only distributed training.

Configs switch it on with ``runner_type = 'x3d_plugin.X3DRunner'``
(configs/_base_/default_runtime.py does), which ``tools/train.py``,
``tools/test.py`` and MMAction2's own tools (``mim train mmaction``) build
through the ``RUNNERS`` registry. A config without it runs on MMEngine's
``Runner`` exactly as without the plugin.
"""
import contextlib
import datetime
import os.path as osp
import random

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.dist import all_gather_object, broadcast, is_distributed
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from x3d_plugin.engine.loops import ResumableEpochBasedTrainLoop
from x3d_plugin.registry import RUNNERS
from x3d_plugin.utils.checkpoint_file import (MissingCheckpointError,
                                              is_local_path,
                                              load_checkpoint_file,
                                              load_local_checkpoint)
from x3d_plugin.utils.fileio import LAST_CHECKPOINT, read_last_checkpoint


# The names of Runner.register_default_hooks's own defaults.
_MMENGINE_DEFAULT_HOOKS = ('runtime_info', 'timer', 'sampler_seed', 'logger',
                           'param_scheduler', 'checkpoint')


@RUNNERS.register_module()
class X3DRunner(Runner):
    """MMEngine's ``Runner`` (same arguments and config) with:

    * **verified loads**: ``load_from``, ``--resume`` and
      ``load_checkpoint`` read a local file only after checking that it
      exists and is whole (zip directory and CRCs), so a truncated or
      damaged file is a :class:`~x3d_plugin.utils.checkpoint_file.
      CorruptCheckpointError` naming it and the newest checkpoints beside
      it. ``load_from`` loads weights-only; ``resume`` reads the run's own
      training state with full unpickling.
    * **clear auto-resume**: ``resume=True`` without ``load_from`` in a work
      directory without ``last_checkpoint`` says in one line that training
      starts from scratch (MMEngine logs "Auto resumed from the latest
      checkpoint None."); a ``last_checkpoint`` that is empty or names a
      missing file is an error saying which checkpoint to pass instead.
    * **CPU-only distributed training**: without CUDA, ``launcher='pytorch'``
      starts a ``gloo`` process group (MMEngine 0.10's ``init_dist`` calls
      ``torch.cuda.set_device``) and the model is wrapped in
      ``MMDistributedDataParallel`` with ``device_ids=None`` (DDP refuses
      device ids for CPU modules). With CUDA nothing changes.
    * **default hooks removable by name**: ``default_hooks=dict(name=None)``
      removes any default hook, the plugin's (``precise_bn``,
      ``skipped_videos``, ``non_finite_loss``, ``preemption``) too.
    * **exact resume**: checkpoints hold the Python, NumPy and torch (and
      CUDA) random generator states of every process, restored by
      ``resume``; the data loaders draw their worker seeds from generators
      of their own (not the global one), and an ``EpochBasedTrainLoop``
      runs as ``x3d_plugin.ResumableEpochBasedTrainLoop``, which resumes
      inside an epoch. With ``x3d_plugin.SeededSampler`` (augmentation as a
      function of seed, epoch and sample) a run stopped and resumed ends
      with exactly the weights of one that never stopped. With several
      processes, saving a resumable checkpoint gives every process rank 0's
      buffers (BN statistics), which are what the checkpoint holds.
    * **process state restored on every exit path**: after ``train()``,
      returning or raising, each hook's ``restore_process_state()`` runs
      (``PreemptionHook`` puts back its signal handlers).
    """

    _trusted_load = False
    _resumed_random_states = None
    _random_states_to_save = None

    def register_default_hooks(self, hooks=None) -> None:
        # MMEngine removes a default hook set to None only among its own
        # names; the plugin's default_hooks entries (precise_bn,
        # non_finite_loss, preemption...) are removed the same way here.
        if hooks is not None:
            hooks = {
                name: hook
                for name, hook in hooks.items()
                if hook is not None or name in _MMENGINE_DEFAULT_HOOKS
            }
        super().register_default_hooks(hooks)

    def setup_env(self, env_cfg: dict) -> None:
        if (self.distributed and self.launcher == 'pytorch'
                and not is_distributed() and not torch.cuda.is_available()):
            # NCCL needs CUDA; gloo runs on the CPU. torchrun's environment
            # (MASTER_ADDR, RANK, ...) gives the rest.
            dist_cfg = dict(env_cfg.get('dist_cfg', {}))
            dist_cfg['backend'] = 'gloo'
            if isinstance(dist_cfg.get('timeout'), (int, float)):
                # Seconds, as MMEngine's init_dist takes them.
                dist_cfg['timeout'] = datetime.timedelta(
                    seconds=dist_cfg['timeout'])
            torch_dist.init_process_group(**dist_cfg)
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg, model):
        if (self.distributed and not torch.cuda.is_available()
                and not is_model_wrapper(model)):
            wrapper = dict(
                type='MMDistributedDataParallel',
                broadcast_buffers=False,
                find_unused_parameters=self.cfg.get(
                    'find_unused_parameters', False))
            wrapper.update(model_wrapper_cfg or {})
            wrapper['device_ids'] = None
            wrapper.pop('output_device', None)
            model_wrapper_cfg = wrapper
        return super().wrap_model(model_wrapper_cfg, model)

    @staticmethod
    def build_dataloader(dataloader, seed=None, diff_rank_seed=False):
        loader = Runner.build_dataloader(dataloader, seed, diff_rank_seed)
        if isinstance(loader, torch.utils.data.DataLoader) and (
                loader.generator is None):
            # Each iterator draws its workers' base seed from this generator
            # instead of torch's global one, so the training process's random
            # stream (dropout) does not depend on when iterators start.
            loader.generator = torch.Generator().manual_seed(
                0 if seed is None else seed)
        return loader

    def build_train_loop(self, loop):
        if isinstance(loop, dict):
            kind = loop.get('type')
            # MMEngine's forms of an epoch-based loop: the type, or no
            # type and by_epoch=True (which then must not stay beside it).
            if kind == 'EpochBasedTrainLoop' or (
                    kind is None and loop.get('by_epoch',
                                              'max_epochs' in loop)):
                loop = {k: v for k, v in loop.items() if k != 'by_epoch'}
                # The class itself: a name would need the x3d_plugin scope
                # in the registry the runner builds from (its
                # default_scope), which a runner built in code may lack.
                loop['type'] = ResumableEpochBasedTrainLoop
        return super().build_train_loop(loop)

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        # Every process calls this (MMEngine's is master_only inside), so
        # the states of all are gathered here, for checkpoints that resume
        # (with the optimizer; best_*.pth are saved without).
        if kwargs.get('save_optimizer', True):
            self._random_states_to_save = all_gather_object(_random_states())
            if self.distributed:
                # The checkpoint holds rank 0's buffers (BN statistics):
                # every process continues with them, as a resumed run does.
                model = self.model.module if is_model_wrapper(
                    self.model) else self.model
                for buffer in model.buffers():
                    broadcast(buffer, src=0)
        try:
            super().save_checkpoint(out_dir, filename, *args, **kwargs)
        finally:
            self._random_states_to_save = None

    def call_hook(self, fn_name: str, **kwargs) -> None:
        if (fn_name == 'before_save_checkpoint'
                and self._random_states_to_save is not None):
            kwargs['checkpoint']['random_states'] = (
                self._random_states_to_save)
        super().call_hook(fn_name, **kwargs)

    def load_or_resume(self) -> None:
        if not self._has_loaded and self._resume and self._load_from is None:
            latest = read_last_checkpoint(self.work_dir)
            pointer = osp.join(self.work_dir, LAST_CHECKPOINT)
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
            elif is_local_path(latest) and not osp.isfile(latest):
                raise MissingCheckpointError(
                    f'{pointer} names {latest!r}, which does not exist; pass '
                    'an existing checkpoint with --resume PATH or delete '
                    f'{pointer} to start from scratch')
        return super().load_or_resume()

    def resume(self, filename: str, *args, **kwargs) -> None:
        self._trusted_load = True
        try:
            super().resume(filename, *args, **kwargs)
        finally:
            self._trusted_load = False
        states = self._resumed_random_states
        self._resumed_random_states = None
        if states is None:
            self.logger.warning(
                f'{filename} holds no random generator states (not written by '
                'X3DRunner): random augmentation and dropout after the resume '
                'differ from an uninterrupted run.')
        elif len(states) != self.world_size:
            self.logger.warning(
                f'{filename} holds the random generator states of '
                f'{len(states)} processes and this run has {self.world_size}: '
                'they are not restored.')
        else:
            _set_random_states(states[self.rank])

    def load_checkpoint(self,
                        filename: str,
                        map_location='cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):
        if is_local_path(filename):
            checkpoint = load_local_checkpoint(
                filename, map_location, trusted=self._trusted_load)
        else:
            checkpoint = load_checkpoint_file(filename, map_location)
        if self._trusted_load:
            self._resumed_random_states = checkpoint.get('random_states')
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def train(self):
        try:
            return super().train()
        finally:
            for hook in self.hooks:
                restore = getattr(hook, 'restore_process_state', None)
                if restore is not None:
                    with contextlib.suppress(Exception):
                        restore()
            self._stop_persistent_workers()

    def _stop_persistent_workers(self) -> None:
        """Stop the data loaders' persistent workers now. Left running,
        they are killed by multiprocessing's SIGTERM to daemonic children
        when the interpreter exits, and PyTorch's SIGCHLD handler prints
        "DataLoader worker ... is killed by signal: Terminated" after a
        run that went well. A later ``val()`` or ``test()`` starts them
        again."""
        for name in ('_train_loop', '_val_loop', '_test_loop'):
            loader = getattr(getattr(self, name, None), 'dataloader', None)
            iterator = getattr(loader, '_iterator', None)
            shutdown = getattr(iterator, '_shutdown_workers', None)
            if shutdown is not None:
                with contextlib.suppress(Exception):
                    shutdown()
                loader._iterator = None


def _random_states() -> dict:
    """This process's random generator states."""
    states = dict(
        python=random.getstate(), numpy=np.random.get_state(),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def _set_random_states(states: dict) -> None:
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])
