"""Precise BN: recompute BN statistics over many training batches before an
evaluation, as PySlowFast does (``BN.USE_PRECISE_STATS``,
``BN.NUM_BATCHES_PRECISE = 200``); MMAction2 1.x has no such hook."""
import itertools
from typing import Iterable, List

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from x3d_plugin.registry import HOOKS


def _bn_layers(model: nn.Module) -> List[_BatchNorm]:
    return [
        m for m in model.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
    ]


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterable, forward,
                    num_iters: int) -> int:
    """Set every training-mode BN layer's running mean and (unbiased)
    variance to the exact statistics of its inputs over ``num_iters``
    batches, pooled over all processes.

    Unlike fvcore's ``update_bn_stats`` (an average of per-batch variances),
    this is the true variance of everything seen: per-channel sums of ``x``
    and ``x**2`` are accumulated in float64 and reduced across ranks.

    Args:
        model (nn.Module): The model, in training mode.
        batches (Iterable): Batches to run.
        forward (callable): ``forward(batch)`` runs ``model`` on one batch.
        num_iters (int): Batches to use at most.

    Returns:
        int: Batches used on this process.
    """
    layers = _bn_layers(model)
    if not layers:
        return 0
    sums = [torch.zeros(m.num_features, dtype=torch.float64) for m in layers]
    squares = [torch.zeros_like(s) for s in sums]
    counts = [torch.zeros(1, dtype=torch.float64) for _ in layers]

    def make_hook(i):

        def hook(module, args):
            x = args[0].detach().transpose(0, 1).reshape(
                module.num_features, -1).to(torch.float64).cpu()
            sums[i] += x.sum(1)
            squares[i] += (x * x).sum(1)
            counts[i] += x.shape[1]

        return hook

    handles = [m.register_forward_pre_hook(make_hook(i))
               for i, m in enumerate(layers)]
    used = 0
    try:
        for batch in itertools.islice(batches, num_iters):
            forward(batch)
            used += 1
    finally:
        for handle in handles:
            handle.remove()
    for i, m in enumerate(layers):
        if get_world_size() > 1:
            for t in (sums[i], squares[i], counts[i]):
                all_reduce(t, op='sum')
        n = counts[i].item()
        if n < 2:
            continue
        mean = sums[i] / n
        var = (squares[i] / n - mean * mean).clamp_(min=0) * (n / (n - 1))
        m.running_mean.copy_(mean.to(m.running_mean))
        m.running_var.copy_(var.to(m.running_var))
    return used


@HOOKS.register_module()
class PreciseBNHook(Hook):
    """Recompute BN statistics over ``num_iters`` training batches after
    every ``interval`` training epochs (and after the last), before the
    validation of that epoch and before its checkpoint is written.

    Args:
        num_iters (int): Batches per process (PySlowFast: 200).
        interval (int): Every this many epochs. Defaults to 1.
    """

    # Before CheckpointHook (VERY_LOW) so the checkpoint holds the result.
    priority = 'ABOVE_NORMAL'

    def __init__(self, num_iters: int = 200, interval: int = 1) -> None:
        if num_iters <= 0 or interval <= 0:
            raise ValueError('num_iters and interval must be positive')
        self.num_iters = num_iters
        self.interval = interval

    def after_train_epoch(self, runner) -> None:
        if not (self.every_n_epochs(runner, self.interval)
                or self.is_last_train_epoch(runner)):
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        model.train()

        def forward(data):
            data = model.data_preprocessor(data, training=True)
            model.extract_feat(data['inputs'], stage='head')

        used = update_bn_stats(model, runner.train_dataloader, forward,
                               self.num_iters)
        runner.logger.info(
            f'PreciseBN: BN statistics recomputed over {used} batches per '
            f'process ({get_world_size()} processes)')


__all__ = ['PreciseBNHook', 'update_bn_stats']
