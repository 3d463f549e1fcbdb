"""Check a training or test config before any compute.

A wrong arch, a crop that does not fit the frame, a class count that does
not match the labels or data that is not there otherwise fails minutes in
(when the data loaders start), hours in (at the first validation) or not at
all (a silently wrong score). :func:`check_config` finds these from the
config and the annotation lists alone, and reports every one of them at
once, each naming the config key and the fix. ``tools/train.py`` and
``tools/test.py`` call it before building the runner.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from x3d_plugin.datasets.annotations import (AnnotationError,
                                             annotation_entries,
                                             read_label_map)
from x3d_plugin.models.variants import (UnknownArchError, resolve_factors,
                                        x3d_structure)

__all__ = ['ConfigError', 'check_config']

# The loaders each mode builds.
MODE_LOADERS = {
    'train': ('train_dataloader', 'val_dataloader'),
    'test': ('test_dataloader', ),
}
_SAMPLERS = ('SlowFastSampleFrames', 'SampleFrames', 'UntrimmedSampleFrames',
             'DenseSampleFrames')
_INIT_AT_SCALE = ('PyAVInitAtScale', 'DecordInitAtScale')
# Crops and the views each makes of a clip.
_CROP_VIEWS = {'RandomCrop': 1, 'CenterCrop': 1, 'ThreeCrop': 3, 'TenCrop': 10}


class ConfigError(ValueError):
    """A config that cannot work; the message lists every problem found,
    one a line, each as ``config.key: what is wrong; the fix``."""


def check_config(cfg, mode: str = 'train', check_data: bool = True) -> None:
    """Check ``cfg`` (a merged MMEngine config) for what would fail later
    or give a wrong score.

    Checked: the backbone's ``arch``; the head's ``in_channels`` against
    the backbone's output width; ``num_classes`` of the head against each
    dataset's, the config's ``label_map`` file (if it names one) and the
    largest label of each annotation list; in each pipeline, ``clip_len``,
    ``frame_interval`` and ``num_clips`` above 0 and every crop within the
    short side that the decode or resize step before it gives; test views
    (clips x crops) above 1 only with the head's ``average_clips`` set; and,
    with ``check_data``, that every annotation list and video folder
    exists. Only the loaders that ``mode`` uses are checked (``'train'``:
    training, and validation unless ``val_cfg`` or ``val_dataloader`` is
    None; ``'test'``: testing).

    Args:
        cfg (Config): The config, after the command line is merged.
        mode (str): ``'train'`` or ``'test'``.
        check_data (bool): Also check that the data is on disk and read
            the annotation lists. Defaults to True.

    Raises:
        ConfigError: Listing every problem found.
    """
    if mode not in MODE_LOADERS:
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    problems = _check_model(cfg.get('model') or {})
    head = (cfg.get('model') or {}).get('cls_head') or {}
    head_classes = head.get('num_classes')
    label_map = cfg.get('label_map')
    if check_data and label_map and head_classes is not None:
        try:
            read_label_map(label_map, head_classes)
        except AnnotationError as err:
            problems.append(f'label_map: {err}; or set '
                            'model.cls_head.num_classes to match')
    for loader in _used_loaders(cfg, mode):
        for key, dataset in _datasets(cfg[loader].get('dataset'),
                                      f'{loader}.dataset'):
            problems += _check_dataset(key, dataset, head, check_data)
    if problems:
        head_line = ('' if len(problems) == 1 else
                     f'{len(problems)} problems in the config:\n  ')
        raise ConfigError(head_line + '\n  '.join(problems))


def _used_loaders(cfg, mode: str) -> List[str]:
    loaders = []
    for loader in MODE_LOADERS[mode]:
        if not cfg.get(loader):
            continue
        if loader == 'val_dataloader' and not cfg.get('val_cfg'):
            continue  # --no-validate, or a config without validation
        loaders.append(loader)
    return loaders


def _datasets(dataset, key: str) -> List[Tuple[str, Dict]]:
    """``(config key, dataset config)`` of the datasets that read files,
    looking inside wrappers (``RepeatDataset``, ``ConcatDataset``...)."""
    if not dataset:
        return []
    if isinstance(dataset, (list, tuple)):
        return [
            d for i, sub in enumerate(dataset)
            for d in _datasets(sub, f'{key}[{i}]')
        ]
    if dataset.get('dataset'):
        return _datasets(dataset['dataset'], f'{key}.dataset')
    if dataset.get('datasets'):
        return _datasets(dataset['datasets'], f'{key}.datasets')
    return [(key, dataset)]


def _short_type(step: Dict) -> str:
    """``'x3d_plugin.PyAVInitAtScale'`` -> ``'PyAVInitAtScale'``."""
    type_ = step.get('type', '')
    return type_.rsplit('.', 1)[-1] if isinstance(type_, str) else ''


def _check_model(model: Dict) -> List[str]:
    backbone = model.get('backbone') or {}
    head = model.get('cls_head') or {}
    if _short_type(backbone) != 'X3D' or 'x3d_plugin' not in str(
            backbone.get('type')):
        return []  # not our backbone: its widths are not ours to know
    arch = backbone.get('arch', 'm')
    try:
        structure = x3d_structure(resolve_factors(arch))
    except (UnknownArchError, TypeError) as err:
        return [f'model.backbone.arch: {err}']
    if model.get('neck'):
        return []  # the head reads the neck's output, not a stage
    # The head reads the last feature map the backbone returns.
    in_width = structure.head_in_channels
    out_indices = backbone.get('out_indices')
    if isinstance(out_indices, (list, tuple)) and out_indices and isinstance(
            out_indices[-1],
            int) and 0 <= out_indices[-1] < len(structure.stage_widths):
        in_width = structure.stage_widths[out_indices[-1]]
    problems = []
    for arg, want in (('in_channels', in_width),
                      ('mid_channels', structure.head_mid_channels)):
        have = head.get(arg)
        if have is not None and have != want:
            problems.append(
                f'model.cls_head.{arg} is {have} but X3D arch {arch!r} '
                f'needs {want}; set model.cls_head.{arg}={want}')
    return problems


def _check_dataset(key: str, dataset: Dict, head: Dict,
                   check_data: bool) -> List[str]:
    problems = _check_pipeline(f'{key}.pipeline',
                               dataset.get('pipeline') or [], head,
                               not key.startswith('train_dataloader'))
    head_classes = head.get('num_classes')
    num_classes = dataset.get('num_classes')
    if (head_classes is not None and num_classes is not None
            and num_classes != head_classes):
        problems.append(
            f'{key}.num_classes is {num_classes} but '
            f'model.cls_head.num_classes is {head_classes}; set both to the '
            'number of classes of your labels')
    if check_data:
        problems += _check_files(key, dataset, head_classes)
    return problems


def _check_pipeline(key: str, pipeline: Sequence[Dict], head: Dict,
                    averaged: bool) -> List[str]:
    problems = []
    # The smallest short side the frames can have here, and the key of the
    # step that set it (None: unknown, e.g. the file's own size).
    short, short_key = None, None
    views = 1
    for i, step in enumerate(pipeline):
        if not isinstance(step, dict):
            continue
        name, where = _short_type(step), f'{key}[{i}]'
        if name in _SAMPLERS:
            problems += _check_sampler(where, step)
            clips = step.get('num_clips', 1)
            views *= clips if isinstance(clips, int) and clips > 0 else 1
        elif name in _INIT_AT_SCALE:
            side = step.get('short_side')
            short = min(side) if isinstance(side, (list, tuple)) else side
            short_key = f'{where}.short_side'
        elif name == 'Resize':
            short, short_key = _resize_short_side(step), f'{where}.scale'
        elif name == 'RandomRescale':
            scale_range = step.get('scale_range')
            short = min(scale_range) if scale_range else None
            short_key = f'{where}.scale_range'
        elif name in _CROP_VIEWS:
            size_key = 'size' if name == 'RandomCrop' else 'crop_size'
            size = step.get(size_key)
            crop = (max(size) if isinstance(size, (list, tuple)) else size)
            problems += _check_crop(f'{where}.{size_key}', name, size, crop,
                                    short, short_key)
            views *= _CROP_VIEWS[name]
            if isinstance(crop, int):
                short, short_key = (min(size) if isinstance(
                    size, (list, tuple)) else size), f'{where}.{size_key}'
        elif any(word in name for word in ('Crop', 'Resize', 'Scale')):
            short, short_key = None, None  # a size we do not work out
    if averaged and views > 1 and head.get('average_clips') is None:
        problems.append(
            f'model.cls_head.average_clips is None but {key} makes '
            f'{views} views (clips x crops) of each video, whose scores '
            'would not be averaged into one per video; set '
            "model.cls_head.average_clips='prob' (or 'score')")
    return problems


def _check_sampler(where: str, step: Dict) -> List[str]:
    problems = []
    for arg, default, what in (('clip_len', None, 'frames per clip'),
                               ('frame_interval', 1, 'the sampling rate'),
                               ('num_clips', 1, 'clips per video')):
        value = step.get(arg, default)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(f'{where}.{arg} is {value!r}; {what} must be a '
                            'positive integer')
    return problems


def _resize_short_side(step: Dict) -> Optional[int]:
    """The short side after MMAction2's ``Resize``, where the config fixes
    a lower bound for it; None otherwise."""
    scale = step.get('scale')
    if not isinstance(scale, (list, tuple)) or len(scale) != 2:
        return None  # a factor: depends on the video
    if -1 in scale:
        return max(scale)  # (-1, N): the short side is N
    if not step.get('keep_ratio', True):
        return min(scale)  # exactly (w, h)
    return None  # fits inside (w, h): depends on the aspect ratio


def _check_crop(size_key: str, name: str, size, crop, short: Optional[int],
                short_key: Optional[str]) -> List[str]:
    if not isinstance(crop, int) or crop <= 0:
        return [
            f'{size_key} is {size!r}; the crop size must be a positive '
            'integer'
        ]
    if short is None:
        return []
    if crop > short:
        return [
            f'{size_key} is {size} but {short_key} makes the short side as '
            f'small as {short}: a {name} cannot be larger than the frame; '
            f'set {size_key} to at most {short} or {short_key} to at least '
            f'{crop}'
        ]
    if name == 'ThreeCrop' and crop != short:
        # MMAction2's ThreeCrop slides along the long side only: the crop
        # must be as high (wide) as the frame.
        return [
            f'{size_key} is {size} but {short_key} gives a short side of '
            f'{short}: ThreeCrop needs a crop as large as the short side; '
            f'set {size_key} to {short} (or the short side to {crop})'
        ]
    return []


def _data_hint(path: str, is_list: bool) -> str:
    """How to make the data (an annotation list or a video folder) at
    ``path``."""
    if 'kinetics' in path.lower():
        return ('tools/data/kinetics/build_file_list.py builds it from the '
                'downloaded videos' if is_list else 'download the '
                'Kinetics-400 videos into it') + (
                    ' (docs/training.md, "Kinetics-400 data")')
    if 'demo' in path.lower():
        return ('python tools/data/generate_demo_dataset.py '
                f'{osp.dirname(path) if is_list else path} makes it')
    if 'ucf101' in path.lower() or 'hmdb51' in path.lower():
        return ('tools/data/build_split_lists.py builds it from the '
                'official split files' if is_list else 'put the videos '
                'there in class folders') + ' (configs/finetune/README.md)'
    if 'my_videos' in path.lower():
        return ('python tools/data/build_folder_lists.py '
                f'{osp.dirname(path) if is_list else path} writes it')
    return 'point the key at your data with --cfg-options'


def _check_files(key: str, dataset: Dict,
                 head_classes: Optional[int]) -> List[str]:
    data_root = dataset.get('data_root') or ''
    problems = []
    prefix = dataset.get('data_prefix') or {}
    for name in ('video', 'img'):
        folder = prefix.get(name) if isinstance(prefix, dict) else None
        if not folder:
            continue
        folder = osp.join(data_root, folder)
        if not osp.isdir(folder):
            problems.append(
                f'{key}.data_prefix.{name}: the folder {folder!r} does not '
                f'exist; {_data_hint(folder, False)}')
    ann_file = dataset.get('ann_file')
    if not ann_file:
        return problems
    ann_file = osp.join(data_root, ann_file)
    if not osp.isfile(ann_file):
        problems.append(f'{key}.ann_file: the annotation list {ann_file!r} '
                        f'does not exist; {_data_hint(ann_file, True)}')
        return problems
    if head_classes is None or dataset.get('multi_class'):
        return problems
    try:
        entries, _ = annotation_entries(ann_file,
                                        dataset.get('delimiter', ' '))
    except AnnotationError as err:
        return problems + [f'{key}.ann_file: {err}']
    if entries:
        lineno, _, label = max(entries, key=lambda e: e[2])
        if label >= head_classes:
            problems.append(
                f'{key}.ann_file: {ann_file}:{lineno} has label {label} but '
                f'model.cls_head.num_classes is {head_classes} (labels '
                f'0..{head_classes - 1}); set num_classes to the number of '
                f'classes (at least {label + 1}) or fix the list')
    return problems
