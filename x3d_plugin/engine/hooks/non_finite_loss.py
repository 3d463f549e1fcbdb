"""Stop training at a NaN or infinite loss before the optimizer step writes
it into the weights, or skip such steps up to a limit."""
from typing import List

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict
from mmengine.runner import EpochBasedTrainLoop

from x3d_plugin.registry import HOOKS
from x3d_plugin.utils.fileio import read_last_checkpoint

SKIPS_KEY = 'non_finite_loss_skipped_iters'


class NonFiniteLossError(FloatingPointError):
    """Training stopped at a NaN or infinite loss (before the optimizer
    step, so the weights and the checkpoints are as they were)."""


def last_checkpoint(runner) -> str:
    """The checkpoint the run saved last (as ``CheckpointHook`` and
    :class:`PreemptionHook` record it), or None."""
    return (runner.message_hub.get_info('last_ckpt')
            or read_last_checkpoint(runner.work_dir) or None)


def where_in_training(runner) -> str:
    """``iteration N (epoch E)``, 1-based as in the training log."""
    where = f'iteration {runner.iter + 1}'
    if isinstance(runner.train_loop, EpochBasedTrainLoop):
        where += f' (epoch {runner.epoch + 1})'
    return where


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Check the loss of every training iteration before backward and the
    optimizer step, and stop (or skip the step) when it is NaN or infinite.

    A hook's ``after_train_iter`` comes after the optimizer step, when a NaN
    is already in the weights; so this hook wraps the ``update_params`` of
    the runner's optimizer wrapper (any type: ``OptimWrapper``,
    ``AmpOptimWrapper``, each of an ``OptimWrapperDict``), which the model's
    ``train_step`` calls with the loss (MMEngine's ``BaseModel`` and
    MMAction2's recognizers do; a ``train_step`` that calls ``backward`` and
    ``step`` itself is not guarded).

    On a non-finite loss:

    - with ``max_skips=0`` (default), :class:`NonFiniteLossError` stops
      training, naming the iteration, the epoch and the last checkpoint,
      which is left as it was (nothing is saved);
    - otherwise the step is skipped: no backward, no optimizer step, the
      gradients zeroed (with gradient accumulation, those of the window so
      far too), and a warning names the iteration. After ``max_skips``
      skipped steps over the whole run (resumed runs included) the next one
      stops training. The count is logged at the end of training and kept in
      the message hub as ``non_finite_loss_skipped_iters``.

    With several processes every process makes the same decision (one
    ``all_reduce`` of a flag per iteration), so no process waits in a
    collective that another one skipped.

    Args:
        max_skips (int): Iterations with a non-finite loss to skip before
            stopping. Defaults to 0.
    """

    priority = 'VERY_HIGH'

    def __init__(self, max_skips: int = 0):
        if not isinstance(max_skips, int) or max_skips < 0:
            raise ValueError(
                f'NonFiniteLossHook: max_skips must be an int >= 0, got '
                f'{max_skips!r}')
        self.max_skips = max_skips

    def before_train(self, runner) -> None:
        self.skipped: List[int] = list(
            runner.message_hub.get_info(SKIPS_KEY, []))
        wrappers = runner.optim_wrapper
        if isinstance(wrappers, OptimWrapperDict):
            wrappers = list(wrappers.optim_wrappers.values())
        else:
            wrappers = [wrappers]
        for wrapper in wrappers:
            self._guard(runner, wrapper)

    def _guard(self, runner, optim_wrapper) -> None:
        update_params = optim_wrapper.update_params
        if getattr(update_params, '_non_finite_guard', False):
            return  # guarded by an earlier train() of this runner

        def guarded_update_params(loss, *args, **kwargs):
            if self._finite_on_every_process(loss):
                return update_params(loss, *args, **kwargs)
            self._on_non_finite(runner, optim_wrapper, loss)

        guarded_update_params._non_finite_guard = True
        optim_wrapper.update_params = guarded_update_params

    @staticmethod
    def _finite_on_every_process(loss: torch.Tensor) -> bool:
        bad = torch.logical_not(torch.isfinite(loss.detach())).any()
        bad = bad.to(torch.float32).reshape(1)
        all_reduce(bad, op='max')
        return not bool(bad.item())

    def _on_non_finite(self, runner, optim_wrapper, loss) -> None:
        value = loss.detach().float()
        value = (f'{value.item():g}' if value.numel() == 1 and not bool(
            torch.isfinite(value)) else 'non-finite on another process')
        where = where_in_training(runner)
        if len(self.skipped) < self.max_skips:
            self.skipped.append(runner.iter + 1)
            runner.message_hub.update_info(SKIPS_KEY, list(self.skipped))
            optim_wrapper.zero_grad()
            # backward() counts the iteration for gradient accumulation;
            # count the skipped one too, so later windows stay aligned.
            optim_wrapper._inner_count += 1
            runner.logger.warning(
                f'NonFiniteLossHook: loss {value} at {where}: step skipped '
                f'({len(self.skipped)} of at most {self.max_skips}).')
            return
        checkpoint = last_checkpoint(runner)
        saved = (f'The last checkpoint, {checkpoint}, is as it was saved; '
                 'continue from it with `tools/train.py CONFIG --resume '
                 f'{checkpoint}`' if checkpoint else
                 'No checkpoint was saved before it; start again')
        skipped = (f' after skipping {len(self.skipped)} such steps'
                   if self.skipped else '')
        message = (
            f'loss {value} at {where}{skipped}: training stopped before the '
            f'optimizer step, so the weights hold no NaN/inf. {saved} with '
            'a lower learning rate (or after checking the data), or let '
            'NonFiniteLossHook(max_skips=N) skip such steps.')
        runner.logger.error(message)
        raise NonFiniteLossError(message)

    def after_train(self, runner) -> None:
        if self.skipped:
            runner.logger.warning(
                f'NonFiniteLossHook: {len(self.skipped)} steps skipped for a '
                f'non-finite loss, at iterations {self.skipped}.')
        else:
            runner.logger.info(
                'NonFiniteLossHook: every training loss was finite.')
