"""Per-snippet clip features of a video, for temporal action localization.

A *snippet* is one clip of the config's test-pipeline frame sampler
(``num_frames`` frames at ``sampling_rate``). One snippet is centred every
``stride`` frames of the file, at frames ``stride // 2``, ``stride // 2 +
stride``, ... for every centre inside the video, with its middle sampled
frame on the centre: the placement of MMAction2's ``UntrimmedSampleFrames``
(its long-video feature extraction). Frames before the start or past the
end repeat the first or last frame.
A video of ``total_frames`` frames therefore has
``ceil((total_frames - stride // 2) / stride)`` snippets, and snippet ``i``
stands for frames ``[i * stride, (i + 1) * stride)``.

Each snippet goes through the rest of the test pipeline (decode, crop) and
the network; the features of the pipeline's spatial views (e.g. the three
crops of ``ThreeCrop``) are averaged. Three depths can be read out:

==============  ============================================  =============
``feature``     what                                          width (XS-L)
==============  ============================================  =============
``backbone``    the last stage, averaged over T, H, W (what     192 (XL 280)
                MMAction2's ``FeatureHead`` gives)
``head_conv``   X3DHead's 1x1x1 conv + BN + ReLU, averaged      432 (XL 630)
                over T, H, W (PySlowFast's ``conv_5``)
``pre_logits``  X3DHead's linear layer + ReLU, the input of    2048
                the classifier (PySlowFast's ``lin_5``)
==============  ============================================  =============

:func:`write_feature_csv` writes them as MMAction2's localization datasets
(``ActivityNetDataset`` + ``LoadLocalizationFeature``) read them: one CSV
per video, a header line, then one line per snippet (or per output step
after :func:`resample_features`).
"""
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.dataset import Compose
from torch import nn

from x3d_plugin.utils.fileio import atomic_path
from .inference import (InferenceError, _check_video, _reusable,
                        _SharedReader)

FEATURES = ('backbone', 'head_conv', 'pre_logits')


def snippet_centres(total_frames: int, stride: int) -> np.ndarray:
    """Centre frames of the snippets of a video of ``total_frames`` frames:
    ``stride // 2 + k * stride`` for every one inside the video."""
    if stride <= 0:
        raise ValueError(f'stride must be a positive number of frames, got '
                         f'{stride}')
    return np.arange(stride // 2, total_frames, stride)


def _snippet_indices(sampler, centre: int, total: int,
                     fps: float) -> np.ndarray:
    """Frame indices of the snippet centred on frame ``centre``: the
    sampler's clip that starts at frame 0, shifted so that its middle
    sampled frame (number ``clip_len // 2``) is ``centre``, then clamped to
    the video. For ``SampleFrames`` these are ``UntrimmedSampleFrames``'s
    indices."""
    from x3d_plugin.datasets.transforms import clip_frame_indices
    # An endless video: nothing clamped or wrapped yet.
    offsets = clip_frame_indices(sampler, 0.0, np.iinfo(np.int32).max, fps)
    index = int(centre) - offsets[len(offsets) // 2] + offsets
    return np.clip(index, 0, total - 1).astype(np.int64)


def _split_pipeline(model: nn.Module):
    """(opener, sampler, rest) of the model's test pipeline."""
    from mmaction.datasets.transforms import SampleFrames

    from x3d_plugin.datasets.transforms import SlowFastSampleFrames
    steps = Compose(model.cfg.test_pipeline).transforms
    at = [i for i, step in enumerate(steps)
          if type(step) in (SlowFastSampleFrames, SampleFrames)]
    if len(at) != 1:
        raise InferenceError(
            'feature extraction needs exactly one '
            'x3d_plugin.SlowFastSampleFrames or SampleFrames in the test '
            f'pipeline, found {len(at)}')
    return (Compose(steps[:at[0]]), steps[at[0]],
            Compose(steps[at[0] + 1:]))


def _check_feature(model: nn.Module, feature: str) -> None:
    if feature not in FEATURES:
        raise ValueError(f'feature must be one of {FEATURES}, got '
                         f'{feature!r}')
    if feature != 'backbone' and not all(
            hasattr(model.cls_head, name) for name in ('conv5', 'bn5', 'fc1')):
        raise InferenceError(
            f'feature={feature!r} reads X3DHead layers but the model\'s head '
            f'is {type(model.cls_head).__name__}; use '
            "feature='backbone'")


def clip_features(model: nn.Module, clips: torch.Tensor,
                  feature: str = 'backbone') -> torch.Tensor:
    """Features ``N x D`` of a normalised clip batch ``N x 3 x T x H x W``.

    Args:
        model: An MMAction2 recognizer with the plugin's X3D backbone (and
            an ``X3DHead`` for the head features).
        clips (Tensor): Clips, normalised as the data preprocessor does.
        feature (str): ``'backbone'``, ``'head_conv'`` or ``'pre_logits'``
            (see the module's table).
    """
    _check_feature(model, feature)
    x = model.backbone(clips)
    if isinstance(x, (tuple, list)):
        x = x[-1]
    if feature == 'backbone':
        return x.mean(dim=(2, 3, 4))
    head = model.cls_head
    x = head.relu(head.bn5(head.conv5(x))).mean(dim=(2, 3, 4))
    if feature == 'head_conv':
        return x
    return head.relu(head.fc1(x))


def extract_features(model: nn.Module,
                     video: str,
                     stride: int = 16,
                     feature: str = 'backbone',
                     batch_size: int = 8) -> Dict:
    """Features of every snippet of ``video``.

    One reader serves the whole video; the snippets of a batch are decoded
    in one call (each frame once, however many snippets overlap on it) and
    go through the network together, so memory is bounded by
    ``batch_size`` clips whatever the video's length.

    Args:
        model: From :func:`~x3d_plugin.apis.init_recognizer`; its config's
            ``test_pipeline`` gives the sampler, decoding and crops.
        video (str): The video file.
        stride (int): Frames of the file between snippet centres.
            Defaults to 16 (ActivityNet's feature snippets).
        feature (str): ``'backbone'``, ``'head_conv'`` or ``'pre_logits'``.
            Defaults to ``'backbone'``.
        batch_size (int): Snippets per forward pass. Defaults to 8.

    Returns:
        dict: ``features`` (``num_snippets x D`` float32 array),
        ``centres`` (frame of each snippet's centre), ``total_frames``,
        ``fps`` (the file's; 0 if unknown) and ``stride``.

    Raises:
        InferenceError: A missing or unreadable video, a pipeline without
            one frame sampler, a head without the requested layers.
        VideoDecodeError: A frame that cannot be decoded (names the file).
    """
    _check_feature(model, feature)
    if batch_size <= 0:
        raise ValueError(f'batch_size must be positive, got {batch_size}')
    _check_video(video)
    opener, sampler, rest = _split_pipeline(model)
    base = dict(filename=video, label=-1, start_index=0, modality='RGB')
    info = opener(dict(base))
    total, fps = info['total_frames'], info.get('avg_fps') or 0.0
    centres = snippet_centres(total, stride)
    shared = None
    if _reusable(info.get('video_reader')):
        shared = info['video_reader'] = _SharedReader(info['video_reader'])
    device = next(model.parameters()).device
    rows: List[np.ndarray] = []
    try:
        for first in range(0, len(centres), batch_size):
            batch = centres[first:first + batch_size]
            results = dict(info) if shared is not None else opener(dict(base))
            results.update(
                frame_inds=np.concatenate([
                    _snippet_indices(sampler, c, total, fps) for c in batch
                ]),
                clip_len=sampler.clip_len,
                frame_interval=sampler.frame_interval,
                num_clips=len(batch))
            data = rest(results)
            packed = model.data_preprocessor(
                dict(inputs=[data['inputs']],
                     data_samples=[data['data_samples']]), False)
            # FormatShape puts the views first: (V * B) x 3 x T x H x W.
            clips = packed['inputs'][0].to(device)
            with torch.no_grad():
                feats = clip_features(model, clips, feature)
            feats = feats.view(-1, len(batch), feats.shape[-1]).mean(0)
            rows.append(feats.float().cpu().numpy())
    finally:
        if shared is not None:
            shared.release()
    width = rows[0].shape[1] if rows else 0
    features = (np.concatenate(rows) if rows else np.zeros(
        (0, width), np.float32))
    return dict(features=features, centres=centres, total_frames=total,
                fps=fps, stride=stride)


def resample_features(features: np.ndarray, num_steps: int,
                      samples_per_step: int = 3) -> np.ndarray:
    """``features`` (``L x D``, one row per snippet) resampled to
    ``num_steps`` rows: the snippet axis ``[0, L - 1]`` is cut into
    ``num_steps`` equal bins and each output row is the mean of the
    features linearly interpolated at ``samples_per_step`` evenly spaced
    points from the start of its bin. This is how MMAction2's ActivityNet
    features are brought to BMN's and BSN's fixed ``temporal_dim`` of 100
    (``pool_feature`` in its ``tools/data/activitynet/
    activitynet_feature_postprocessing.py``); one snippet is repeated.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError('features must be a non-empty L x D array, got '
                         f'shape {features.shape}')
    if num_steps <= 0 or samples_per_step <= 0:
        raise ValueError('num_steps and samples_per_step must be positive')
    if len(features) == 1:
        return np.repeat(features, num_steps, axis=0)
    # A small margin keeps the first and last points inside the axis.
    margin = 1e-4
    start, end = margin, len(features) - 1 - margin
    step = (end - start) / num_steps
    points = (start + step * np.arange(num_steps)[:, None] +
              step * np.arange(samples_per_step)[None, :] / samples_per_step)
    low = np.floor(points).astype(np.int64)
    weight = (points - low)[..., None]
    high = np.minimum(low + 1, len(features) - 1)
    values = (1 - weight) * features[low] + weight * features[high]
    return values.mean(axis=1).astype(np.float32)


def write_feature_csv(path: str, features: np.ndarray,
                      precision: int = 6) -> None:
    """Write ``features`` (``L x D``) as MMAction2's localization datasets
    read them: a header ``f0,...,f{D-1}``, then one line of ``D``
    comma-separated values per row, ``precision`` significant digits.

    The file is written whole or not at all
    (:func:`~x3d_plugin.utils.fileio.atomic_path`), so an interrupted run
    never leaves a partial file behind
    (that a later run would keep). MMAction2's ``LoadLocalizationFeature``
    reads a one-row file as a 1-D array and fails, so at least two rows
    are required.

    Raises:
        ValueError: ``features`` has fewer than two rows.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(
            f'{path}: {len(features)} feature row(s); MMAction2\'s '
            'LoadLocalizationFeature needs at least 2. Use a smaller '
            'stride or resample to a fixed number of steps.')
    header = ','.join(f'f{i}' for i in range(features.shape[1]))
    with atomic_path(path) as temp, open(temp, 'w') as f:
        np.savetxt(f, features, fmt=f'%.{precision}g', delimiter=',',
                   header=header, comments='')


def feature_frame(num_rows: int, stride: int,
                  total_frames: Optional[int] = None) -> int:
    """Frames the snippets of a video cover (``num_rows * stride``, at most
    ``total_frames``): the ``feature_frame`` of an ActivityNet-style
    annotation, which BMN's post-processing uses to turn positions on the
    feature axis into seconds."""
    covered = num_rows * stride
    return covered if total_frames is None else min(covered, total_frames)
