"""From a search point to what trains it: the complexity C(X) and an
ordinary MMAction2 config.

The network of a point is the backbone's factors and the head widths that
follow from them; the clip (frames, sampling rate) and the sizes (training
crop, scale jitter, testing size) are written into the base config's
pipelines, step by step.
"""
import copy
import functools
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ...models.complexity import count_parameters, paper_flops
from ...models.recognizer import build_x3d_recognizer
from .space import Point

# Scale jitter and testing size relative to the training crop, PySlowFast's
# X3D recipe: X3D-XS/S crop 160, jitter [182, 228], test 182; X3D-M crop
# 224, jitter [256, 320], test 256 (configs/Kinetics/X3D_*.yaml), i.e.
# 8/7 and 10/7 of the crop, rounded down.
PYSLOWFAST_JITTER = (8 / 7, 10 / 7)
PYSLOWFAST_TEST = 8 / 7

SAMPLERS = ('SlowFastSampleFrames', 'SampleFrames', 'UniformSample')
INITS = ('PyAVInitAtScale', 'DecordInitAtScale')
TRAIN_CROPS = ('RandomCrop', )
EVAL_CROPS = ('CenterCrop', 'ThreeCrop')
# Size-changing steps whose sizes this tool cannot derive from a crop.
UNSUPPORTED = ('Resize', 'RandomResizedCrop', 'MultiScaleCrop', 'TenCrop',
               'RandomRescale', 'PyAVInit', 'DecordInit', 'OpenCVInit')


class ExpansionConfigError(ValueError):
    """A base config the expansion tool cannot turn into candidates."""


@functools.lru_cache(maxsize=None)
def _complexity(factors: Tuple[Tuple[str, float], ...],
                input_shape: Tuple[int, int, int],
                num_classes: int) -> Tuple[int, int]:
    import torch
    with torch.device('meta'):
        model = build_x3d_recognizer(dict(factors), num_classes)
    flops = paper_flops(model, (1, 3, *input_shape),
                        forward=lambda m, x: m.cls_head(m.backbone(x)))
    return flops['total'], count_parameters(model)


def complexity(point: Point, num_classes: int) -> Tuple[float, int]:
    """C(X): GFLOPs of one training clip (multiply-adds of convolutions
    and linear layers, the paper's count and
    ``tools/analysis/complexity.py``'s) and the number of parameters."""
    flops, params = _complexity(tuple(sorted(point.factors.items())),
                                point.input_shape, num_classes)
    return flops / 1e9, params


def sizes(point: Point, jitter_ratio: Sequence[float],
          test_ratio: float) -> Tuple[Tuple[int, int], int]:
    """Training scale jitter (short side range) and testing size."""
    crop = point.crop_size
    jitter = tuple(max(crop, int(crop * r)) for r in jitter_ratio)
    return jitter, max(crop, int(crop * test_ratio))


def _type(step: dict) -> str:
    return str(step.get('type', '')).split('.')[-1]


def set_clip(pipeline: List[dict], point: Point, mode: str,
             jitter: Tuple[int, int], test_size: int,
             where: str) -> List[dict]:
    """A copy of ``pipeline`` that samples ``point``'s clip at its sizes.

    ``mode`` is ``'train'`` (short side in ``jitter``, random crop of the
    training size), ``'val'`` (short side ``test_size``, centre crop of the
    training size) or ``'test'`` (short side and crops ``test_size``).
    """
    pipeline = copy.deepcopy(list(pipeline))
    found = set()
    for index, step in enumerate(pipeline):
        kind = _type(step)
        if kind in UNSUPPORTED:
            raise ExpansionConfigError(
                f'{where}[{index}] is {kind}, whose sizes the expansion '
                f'tool cannot derive from the crop; use one of {INITS} to '
                f'scale and one of {TRAIN_CROPS + EVAL_CROPS} to crop')
        if kind in SAMPLERS:
            step['clip_len'] = point.num_frames
            step['frame_interval'] = point.sampling_rate
            found.add('sampler')
        elif kind in INITS:
            step['short_side'] = (list(jitter) if mode == 'train' else
                                  test_size)
            found.add('scale')
        elif kind in TRAIN_CROPS:
            step['size'] = point.crop_size
            found.add('crop')
        elif kind in EVAL_CROPS:
            step['crop_size'] = (test_size if mode == 'test' else
                                 point.crop_size)
            found.add('crop')
    missing = {'sampler', 'scale', 'crop'} - found
    if missing:
        raise ExpansionConfigError(
            f'{where} has no {" or ".join(sorted(missing))} step; the '
            f'expansion tool needs a frame sampler ({SAMPLERS}), a scaling '
            f'loader ({INITS}) and a crop ({TRAIN_CROPS + EVAL_CROPS})')
    return pipeline


def point_config(base, point: Point, *,
                 jitter_ratio: Sequence[float] = PYSLOWFAST_JITTER,
                 test_ratio: float = PYSLOWFAST_TEST,
                 options: Optional[Dict] = None):
    """The base config (an ``mmengine.Config``) training ``point``:
    backbone factors, head widths, and every pipeline's clip and sizes;
    ``options`` are ``--cfg-options``-style overrides applied last. The
    ``expansion`` section of the base is not part of it."""
    from mmengine.config import Config
    cfg = Config(copy.deepcopy(base.to_dict()))
    cfg.pop('expansion', None)
    structure = point.structure
    cfg.model.backbone.arch = point.factors
    cfg.model.cls_head.in_channels = structure.head_in_channels
    cfg.model.cls_head.mid_channels = structure.head_mid_channels
    jitter, test_size = sizes(point, jitter_ratio, test_ratio)
    for split, mode in (('train', 'train'), ('val', 'val'), ('test', 'test')):
        loader = cfg.get(f'{split}_dataloader')
        if loader:
            loader.dataset.pipeline = set_clip(
                loader.dataset.pipeline, point, mode, jitter, test_size,
                f'{split}_dataloader.dataset.pipeline')
        if cfg.get(f'{split}_pipeline'):
            cfg[f'{split}_pipeline'] = set_clip(
                cfg[f'{split}_pipeline'], point, mode, jitter, test_size,
                f'{split}_pipeline')
    if options:
        cfg.merge_from_dict(options)
    return cfg


def num_classes_of(cfg) -> int:
    return int(cfg.model.cls_head.num_classes)


def train_list_videos(cfg) -> Iterable[str]:
    """Paths of the training videos of an MMAction2 video-list config."""
    import os.path as osp
    dataset = cfg.train_dataloader.dataset
    root = dataset.get('data_prefix', {}).get('video', '')
    with open(dataset.ann_file, encoding='utf-8') as f:
        for line in f:
            if line.strip():
                yield osp.join(root, line.rsplit(maxsplit=1)[0])
