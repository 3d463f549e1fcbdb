"""Data augmentation that is a function of (seed, epoch, sample index)."""
import contextlib
import random
from typing import Iterator, NamedTuple

import numpy as np
import torch
from mmengine.dataset import DefaultSampler

from x3d_plugin.registry import DATA_SAMPLERS

__all__ = ['SampleKey', 'SeededSampler', 'sample_randomness']


class SampleKey(NamedTuple):
    """What :class:`SeededSampler` yields: the sample and what seeds it."""
    index: int
    epoch: int
    seed: int


@contextlib.contextmanager
def sample_randomness(key: SampleKey):
    """Inside this block Python's, NumPy's and torch's global generators
    are seeded from ``key`` (seed, epoch and index); their previous states
    are restored when it ends, so the caller's random streams are left as
    they were (this matters without worker processes, where the pipeline
    runs in the training process)."""
    entropy = np.random.SeedSequence(
        [key.seed & 0xFFFFFFFF, key.epoch, key.index])
    python_seed, numpy_seed, torch_seed = entropy.generate_state(3)
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(int(python_seed))
    np.random.seed(int(numpy_seed))
    torch.manual_seed(int(torch_seed))
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@DATA_SAMPLERS.register_module()
class SeededSampler(DefaultSampler):
    """MMEngine's ``DefaultSampler`` (same arguments and order) that yields
    :class:`SampleKey` instead of plain indices, so that a dataset that
    accepts them (:class:`~x3d_plugin.datasets.CheckedVideoDataset`) draws
    each sample's random augmentation (crop, scale jitter, clip offset) from
    generators seeded by (seed, epoch, index).

    The same sample then gets the same augmentation whatever the number of
    data-loader workers and wherever a run was stopped and resumed, which
    makes a resumed run replay the uninterrupted one exactly
    (docs/fault_tolerance.md).

    Raises:
        TypeError: when the dataset does not accept sample keys.
    """

    def __init__(self, dataset, *args, **kwargs) -> None:
        if not getattr(dataset, 'accepts_sample_keys', False):
            raise TypeError(
                f'x3d_plugin.SeededSampler needs a dataset that accepts '
                f'sample keys (x3d_plugin.CheckedVideoDataset); '
                f'{type(dataset).__name__} does not. Use it, or '
                "sampler=dict(type='DefaultSampler', shuffle=True).")
        super().__init__(dataset, *args, **kwargs)

    def __iter__(self) -> Iterator[SampleKey]:
        for index in super().__iter__():
            yield SampleKey(int(index), self.epoch, self.seed)
