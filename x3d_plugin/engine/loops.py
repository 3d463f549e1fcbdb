"""A training loop that resumes inside an epoch."""
import itertools

from mmengine.runner import EpochBasedTrainLoop

from x3d_plugin.registry import LOOPS


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """MMEngine's ``EpochBasedTrainLoop`` (same arguments) that continues a
    run resumed from a checkpoint saved inside an epoch (``iter_N.pth`` of
    ``PreemptionHook`` or of ``CheckpointHook(by_epoch=False)``) where it
    stopped.

    MMEngine's loop trains such an epoch from its first batch again, so the
    samples before the stop are seen twice, and numbers its iterations from
    1 in the log. Here the batches the epoch trained before the checkpoint
    are left out without loading them (the sampler yields their indices to
    no one), so every sample is seen once per epoch in the uninterrupted
    run's order (the sampler shuffles with the seed and the epoch), and the
    remaining iterations keep their place in the epoch: the log, the ETA
    and the per-iteration scalars say ``[2][9/12]`` where the uninterrupted
    run does.
    """

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        done = self._batches_done()
        loader = self.dataloader
        batches = iter(loader) if not done else _skipping_iter(loader, done)
        for idx, data_batch in enumerate(batches, done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def _batches_done(self) -> int:
        """Batches of the current epoch trained before a resume."""
        per_epoch = len(self.dataloader)
        done = self._iter - self._epoch * per_epoch
        if done <= 0:
            return 0
        if done > per_epoch:
            self.runner.logger.warning(
                f'Resumed at iteration {self._iter} in epoch '
                f'{self._epoch + 1}, which does not fit {per_epoch} batches '
                'per epoch (a different batch size or number of processes?); '
                'the epoch is trained from its start.')
            return 0
        # done == per_epoch: stopped after the epoch's last batch, before
        # its end (precise BN, checkpoint, validation), which runs now.
        self.runner.logger.info(
            f'Resumed inside epoch {self._epoch + 1}; its first {done} of '
            f'{per_epoch} batches were trained before the stop and are left '
            'out.')
        return done


def _skipping_iter(loader, count: int):
    """An iterator over ``loader`` that leaves out the first ``count``
    batches without loading them."""
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
    except TypeError:  # a sampler whose class cannot change: load and drop
        return itertools.islice(iter(loader), count, None)
    try:
        return iter(loader)
    finally:
        sampler.__class__ = cls
