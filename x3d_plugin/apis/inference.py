"""Recognise the action in a video with an X3D config and checkpoint.

``predict_video`` runs the config's test views (clips x crops) and averages
them as testing does; ``predict_timeline`` slides one clip-long window over
the video. MMAction2's ``init_recognizer`` / ``inference_recognizer`` work
with the plugin's configs as well; ``init_recognizer`` here adds a strict
checkpoint check.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from torch import nn

from x3d_plugin.utils.checkpoint_file import MissingCheckpointError
from x3d_plugin.models import fuse_conv_bn as fold_all_bn
from x3d_plugin.models.checkpoint import (CheckpointMismatchError,
                                          CorruptCheckpointError,
                                          load_checkpoint_strict)


class InferenceError(ValueError):
    """A video, checkpoint or label map that inference cannot use."""


def init_recognizer(config: Union[str, Config],
                    checkpoint: Optional[str] = None,
                    device: str = 'cpu',
                    fuse_conv_bn: bool = False,
                    engine: Optional[str] = None,
                    precision: str = 'f32') -> nn.Module:
    """Build the recognizer of ``config`` and load ``checkpoint`` strictly
    (every tensor must fit, else an error lists what does not). With
    ``fuse_conv_bn`` the BN layers are folded into the convolutions (same
    outputs, faster; see :func:`x3d_plugin.models.fuse_conv_bn`).

    With ``engine`` (``pytorch``, ``onnxruntime``, ``openvino`` or
    ``auto``) ``checkpoint`` is a model file exported by
    ``tools/deployment/export.py`` (or a checkpoint, converted in memory)
    and the backbone and head run on that engine at ``precision``
    (:class:`x3d_plugin.apis.engines.EngineRecognizer`); the config's test
    pipeline and view averaging stay as they are.

    Raises:
        InferenceError: for a checkpoint that is missing, truncated or
            damaged or does not fit the model, naming the file.
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    init_default_scope(cfg.get('default_scope', 'mmaction'))
    if engine is not None:
        if checkpoint is None:
            raise InferenceError(f'the {engine} engine needs a model file')
        if device != 'cpu':
            raise InferenceError(f'the {engine} engine runs on the CPU; leave '
                                 f'out device={device!r} (--device)')
        if fuse_conv_bn:
            raise InferenceError('fuse_conv_bn is for the PyTorch '
                                 'recognizer; on an engine BN is folded '
                                 'already')
        from .engines import EngineRecognizer, view_shape
        model = EngineRecognizer(cfg.model, checkpoint, engine, precision,
                                 clip_shape=view_shape(cfg))
        model.cfg = cfg
        return model.eval()
    from mmaction.registry import MODELS
    model_cfg = cfg.model.copy()
    model_cfg.backbone.pop('init_cfg', None)
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        try:
            load_checkpoint_strict(model, checkpoint)
        except (CheckpointMismatchError, CorruptCheckpointError,
                MissingCheckpointError) as err:
            raise InferenceError(str(err)) from err
    model.cfg = cfg
    model = model.to(device).eval()
    if fuse_conv_bn:
        fold_all_bn(model)
    return model


def read_label_map(path: str, num_classes: int) -> List[str]:
    """Class names, one a line; their count must be ``num_classes``."""
    if not osp.isfile(path):
        raise InferenceError(f'label map {path!r} does not exist')
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) != num_classes:
        raise InferenceError(
            f'label map {path!r} has {len(names)} names but the model has '
            f'{num_classes} classes')
    return names


def _check_video(video: str) -> None:
    """An :class:`InferenceError` if ``video`` is missing or cannot be
    read; a missing decoder package is raised as it is (a
    ``MissingPackageError`` naming the install command), as it is not a
    fault of the video."""
    if not osp.isfile(video):
        raise InferenceError(f'video {video!r} does not exist')
    from x3d_plugin.datasets.transforms import SparseVideoReader
    from x3d_plugin.datasets.video_io import (error_reason,
                                              raise_if_environment_error)
    try:
        SparseVideoReader(video).close()
    except Exception as err:
        raise_if_environment_error(err)
        raise InferenceError(f'video {video!r} cannot be read '
                             f'({error_reason(err)}). Re-encode it with '
                             'tools/data/reencode_videos.py.') from err


def _run(model: nn.Module, pipeline: Compose, results: Dict) -> np.ndarray:
    data = pipeline(results)
    batch = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
    with torch.no_grad():
        sample = model.test_step(batch)[0]
    return sample.pred_score.float().cpu().numpy()


def _num_classes(model: nn.Module) -> int:
    return model.cls_head.num_classes


def predict_video(model: nn.Module,
                  video: str,
                  topk: int = 5,
                  label_names: Optional[Sequence[str]] = None) -> Dict:
    """Scores of ``video`` over the config's test views.

    Returns:
        dict: ``scores`` (per class, averaged as the config's
        ``average_clips`` says) and ``topk``, a list of
        ``{'index', 'label', 'score'}`` best first.
    """
    _check_video(video)
    pipeline = Compose(model.cfg.test_pipeline)
    scores = _run(model, pipeline,
                  dict(filename=video, label=-1, start_index=0,
                       modality='RGB'))
    return dict(scores=scores, topk=_topk(scores, topk, label_names))


def _topk(scores, k, label_names):
    order = np.argsort(-scores)[:k]
    return [
        dict(index=int(i),
             label=label_names[i] if label_names else str(int(i)),
             score=float(scores[i])) for i in order
    ]


def predict_timeline(model: nn.Module,
                     video: str,
                     stride: Optional[float] = None,
                     label_names: Optional[Sequence[str]] = None,
                     progress: bool = True) -> List[Dict]:
    """Slide a one-clip window over ``video`` and score each position with
    the config's spatial test views.

    A window is one clip of the test pipeline's frame sampler
    (``x3d_plugin.SlowFastSampleFrames`` or MMAction2's ``SampleFrames``),
    its frames chosen as that sampler chooses them for a clip starting there
    (:func:`x3d_plugin.datasets.transforms.clip_frame_indices`).

    Args:
        model: From :func:`init_recognizer`.
        video (str): The video.
        stride (float, optional): Seconds between window starts; defaults to
            the window's own length (windows touch, no overlap).
        label_names: Class names for the output.
        progress (bool): Show a progress bar.

    Returns:
        list[dict]: per window ``start``, ``end`` (seconds), ``top1``
        (index), ``label``, ``score`` and ``scores`` (all classes).
    """
    _check_video(video)
    from mmaction.datasets.transforms import SampleFrames

    from x3d_plugin.datasets.transforms import (SlowFastSampleFrames,
                                                clip_frame_indices, clip_span)
    steps = Compose(model.cfg.test_pipeline).transforms
    at = [i for i, step in enumerate(steps)
          if type(step) in (SlowFastSampleFrames, SampleFrames)]
    if len(at) != 1:
        raise InferenceError(
            'a timeline needs exactly one x3d_plugin.SlowFastSampleFrames or '
            f'SampleFrames in the test pipeline, found {len(at)}')
    sampler = steps[at[0]]
    opener = Compose(steps[:at[0]])
    rest = Compose(steps[at[0] + 1:])
    info = opener(dict(filename=video, label=-1, start_index=0,
                       modality='RGB'))
    shared = None
    if _reusable(info.get('video_reader')):
        # One reader for all windows: opening one reads the file's whole
        # packet index, which per window would make the timeline
        # quadratic in the video's length.
        shared = info['video_reader'] = _SharedReader(info['video_reader'])
    total, file_fps = info['total_frames'], info.get('avg_fps') or 0.0
    # Sampling uses the file's rate as the sampler does (0: unknown); the
    # times in seconds need one, so a file without a rate counts 30 fps.
    fps = file_fps or 30.0
    span = clip_span(sampler, file_fps)
    step = max(1.0, (stride * fps) if stride else span)
    starts = np.arange(0, max(total - span, 0) + 1e-6, step)
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(starts))
    windows = []
    try:
        for start in starts:
            inds = clip_frame_indices(sampler, start, total, file_fps)
            if shared is not None:
                results = dict(info)
            else:  # a reader of unknown state: a fresh one per window
                results = opener(dict(filename=video, label=-1,
                                      start_index=0, modality='RGB'))
            results.update(frame_inds=inds, clip_len=sampler.clip_len,
                           frame_interval=sampler.frame_interval,
                           num_clips=1)
            scores = _run(model, rest, results)
            top = int(scores.argmax())
            windows.append(
                dict(start=float(start / fps),
                     end=float(min(start + span, total) / fps),
                     top1=top,
                     label=label_names[top] if label_names else str(top),
                     score=float(scores[top]),
                     scores=scores.tolist()))
            if bar is not None:
                bar.update()
    finally:
        if shared is not None:
            shared.release()
    if bar is not None:
        print()
    return windows


def _reusable(reader) -> bool:
    """Whether ``reader`` returns the same frames whatever it read before:
    the plugin's :class:`SparseVideoReader` and decord's ``VideoReader``
    (random access by frame index). Others, e.g. a PyAV container that
    MMAction2's ``PyAVDecode`` decodes on from where it is, are opened
    afresh for every window."""
    from x3d_plugin.datasets.transforms import SparseVideoReader
    return (isinstance(reader, SparseVideoReader)
            or type(reader).__module__.split('.')[0] == 'decord')


class _SharedReader:
    """A video reader lent to one window after another: the decode step's
    ``close()`` after each window is ignored; :meth:`release` closes it at
    the end. Everything else is the reader's."""

    def __init__(self, reader):
        self._reader = reader

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def __len__(self):
        return len(self._reader)

    def close(self) -> None:
        """Kept open for the next window."""

    def release(self) -> None:
        close = getattr(self._reader, 'close', None)
        if close is not None:
            close()


def plot_timeline(windows: List[Dict], path: str, num_lines: int = 5,
                  title: str = '') -> None:
    """Write a PNG of the probabilities over time of the classes that are
    top-1 most often (at most ``num_lines``)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    if not windows:
        raise InferenceError('no windows to plot')
    counts: Dict[int, int] = {}
    for w in windows:
        counts[w['top1']] = counts.get(w['top1'], 0) + 1
    classes = sorted(counts, key=lambda c: -counts[c])[:num_lines]
    centers = [(w['start'] + w['end']) / 2 for w in windows]
    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=100)
    for c in classes:
        label = next(w['label'] for w in windows if w['top1'] == c)
        ax.plot(centers, [w['scores'][c] for w in windows], marker='o',
                label=label)
    ax.set_xlabel('time (s)')
    ax.set_ylabel('probability')
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc='upper right', fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
