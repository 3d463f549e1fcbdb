"""PySlowFast's learning-rate schedule for X3D."""
import math

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler

from x3d_plugin.registry import PARAM_SCHEDULERS


def warmup_cosine_factor(step: float, warmup_steps: float, total_steps: float,
                         warmup_start_factor: float) -> float:
    """LR / base LR at ``step``: a half-period cosine from 1 to 0 over
    ``total_steps``; during the first ``warmup_steps`` a straight line from
    ``warmup_start_factor`` up to the cosine's value at ``warmup_steps``
    (PySlowFast ``SOLVER.LR_POLICY = cosine`` with ``WARMUP_EPOCHS``; the
    cosine is not restarted after warm-up)."""

    def cosine(t):
        return 0.5 * (1.0 + math.cos(math.pi * min(t, total_steps) /
                                     total_steps))

    if step < warmup_steps:
        end = cosine(warmup_steps)
        return warmup_start_factor + (end - warmup_start_factor) * (
            step / warmup_steps)
    return cosine(step)


@PARAM_SCHEDULERS.register_module()
class WarmupCosineLR(LRSchedulerMixin, _ParamScheduler):
    """Linear warm-up into a cosine that spans the whole run, evaluated in
    closed form at every step (resuming continues exactly).

    With ``by_epoch=True, convert_to_iter_based=True`` (as the configs use)
    epochs are converted to iterations, so the LR changes every iteration
    like PySlowFast's ``cur_epoch + cur_iter / epoch_iters``.

    Args:
        optimizer: Wrapped optimizer.
        max_epochs (float): Length of the cosine (all of training).
        warmup_epochs (float): Length of the linear warm-up.
        warmup_start_factor (float): LR at step 0 as a fraction of the base
            LR (PySlowFast: ``WARMUP_START_LR / BASE_LR`` = 0.01 / 0.1).
        begin, end, last_step, by_epoch, verbose: As for MMEngine's
            schedulers.
    """

    def __init__(self,
                 optimizer,
                 max_epochs: float,
                 warmup_epochs: float = 0,
                 warmup_start_factor: float = 0.1,
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = True,
                 verbose: bool = False):
        if max_epochs <= 0 or not 0 <= warmup_epochs < max_epochs:
            raise ValueError('need 0 <= warmup_epochs < max_epochs, got '
                             f'{warmup_epochs} and {max_epochs}')
        self.max_epochs = max_epochs
        self.warmup_epochs = warmup_epochs
        self.warmup_start_factor = warmup_start_factor
        super().__init__(  # LRSchedulerMixin supplies param_name='lr'
            optimizer,
            begin=begin,
            end=end,
            last_step=last_step,
            by_epoch=by_epoch,
            verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, *args, max_epochs, warmup_epochs=0,
                              begin=0, end=INF, by_epoch=True,
                              epoch_length=None, **kwargs):
        """Iteration-based instance from epoch-based arguments."""
        if not by_epoch or not epoch_length:
            raise ValueError('converting to iterations needs by_epoch=True '
                             'and a positive epoch_length')
        return cls(
            *args,
            max_epochs=max_epochs * epoch_length,
            warmup_epochs=warmup_epochs * epoch_length,
            begin=int(begin * epoch_length),
            end=end if end == INF else int(end * epoch_length),
            by_epoch=False,
            **kwargs)

    def _get_value(self):
        factor = warmup_cosine_factor(self.last_step, self.warmup_epochs,
                                      self.max_epochs,
                                      self.warmup_start_factor)
        return [base * factor for base in self.base_values]
