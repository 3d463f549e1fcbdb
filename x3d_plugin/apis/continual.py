"""Per-frame predictions over a video with continual X3D
(:class:`x3d_plugin.models.ContinualX3D`).

The frames are the config's: every ``frame_interval``-th frame of the file
(at the sampler's ``target_fps`` when it resamples), resized and cropped as
the test pipeline does; a pipeline with several crops (``ThreeCrop``) runs
them as one batch and averages them as ``average_clips`` says.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.dataset import Compose
from torch import nn

from x3d_plugin.models.continual import (ContinualX3D,
                                         continual_from_recognizer)
from .inference import (InferenceError, _check_video, _reusable,
                        _SharedReader, _topk)


def continual_frame_indices(sampler, total_frames: int,
                            fps: float) -> np.ndarray:
    """Frames of the file that the continual network sees: one every
    ``frame_interval`` frames, the interval counted at the sampler's
    ``target_fps`` when it has one and the file's rate is known."""
    step = float(sampler.frame_interval)
    target_fps = getattr(sampler, 'target_fps', None)
    if target_fps and fps > 0:
        step *= fps / target_fps
    return np.floor(np.arange(0, total_frames, step)).astype(np.int64)


def predict_continual(model: nn.Module,
                      video: str,
                      net: Optional[ContinualX3D] = None,
                      topk: int = 5,
                      label_names: Optional[Sequence[str]] = None,
                      chunk_frames: int = 32) -> Dict:
    """Continual predictions after every sampled frame of ``video``.

    Args:
        model: From :func:`~x3d_plugin.apis.init_recognizer` (its config's
            test pipeline and data preprocessor are used).
        video (str): The video.
        net (ContinualX3D, optional): The continual network; defaults to
            :func:`~x3d_plugin.models.continual_from_recognizer` of
            ``model`` (windows of the config's ``clip_len``). It is reset
            first.
        topk (int): Classes per frame in ``frames``.
        label_names: Class names for the output.
        chunk_frames (int): Frames decoded at a time (bounds the memory on
            a long video; the result does not depend on it).

    Returns:
        dict: ``frames``, per sampled frame ``{'frame', 'time', 'topk'}``
        (``frame``: index in the file; ``time``: seconds); ``scores``
        (``num_frames x num_classes`` array); ``warmup_frames`` (sampled
        frames before which the outputs still depend on the zero initial
        state).
    """
    _check_video(video)
    from mmaction.datasets.transforms import SampleFrames

    from x3d_plugin.datasets.transforms import SlowFastSampleFrames
    if net is None:
        net = continual_from_recognizer(model)
    net.reset()
    steps = Compose(model.cfg.test_pipeline).transforms
    at = [i for i, step in enumerate(steps)
          if type(step) in (SlowFastSampleFrames, SampleFrames)]
    if len(at) != 1:
        raise InferenceError(
            'continual inference needs exactly one '
            'x3d_plugin.SlowFastSampleFrames or SampleFrames in the test '
            f'pipeline, found {len(at)}')
    sampler = steps[at[0]]
    opener, rest = Compose(steps[:at[0]]), Compose(steps[at[0] + 1:])
    info = opener(dict(filename=video, label=-1, start_index=0,
                       modality='RGB'))
    shared = None
    if _reusable(info.get('video_reader')):
        shared = info['video_reader'] = _SharedReader(info['video_reader'])
    file_fps = info.get('avg_fps') or 0.0
    indices = continual_frame_indices(sampler, info['total_frames'],
                                      file_fps)
    average = getattr(model.cls_head, 'average_clips', 'prob')
    scores = []
    try:
        for begin in range(0, len(indices), chunk_frames):
            inds = indices[begin:begin + chunk_frames]
            results = dict(info) if shared is not None else opener(
                dict(filename=video, label=-1, start_index=0,
                     modality='RGB'))
            results.update(frame_inds=inds, clip_len=len(inds),
                           frame_interval=sampler.frame_interval,
                           num_clips=1)
            data = rest(results)
            batch = model.data_preprocessor(
                dict(inputs=[data['inputs']],
                     data_samples=[data['data_samples']]), False)
            # 1 x crops x C x T x H x W: the crops are the batch.
            clips = batch['inputs'][0]
            logits = net(clips.to(next(net.parameters()).device))
            if average == 'prob':
                logits = logits.softmax(dim=-1)
            scores.append(logits.mean(dim=0).float().cpu().numpy())
    finally:
        if shared is not None:
            shared.release()
    scores = np.concatenate(scores) if scores else np.zeros(
        (0, model.cls_head.num_classes), np.float32)
    fps = file_fps or 30.0
    frames: List[Dict] = [
        dict(frame=int(i), time=float(i / fps),
             topk=_topk(s, topk, label_names))
        for i, s in zip(indices, scores)
    ]
    return dict(frames=frames, scores=scores,
                warmup_frames=net.warmup_frames)

