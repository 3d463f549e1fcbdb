"""MMAction2's stock equivalents of an X3D config, for the benchmarks:
its own X3D + X3DHead, and its stock training pipeline with the config's
recipe (``num_frames``, ``sampling_rate``, ``train_jitter``,
``train_crop``)."""

# MMAction2's X3D is built from gamma_w=1, gamma_b=2.25 and this depth
# factor (ours takes the arch name).
DEPTH = {'xs': 2.2, 's': 2.2, 'm': 2.2, 'l': 5.0}


def stock_recognizer_cfg(arch, num_classes, **head):
    return dict(
        type='Recognizer3D',
        backbone=dict(type='X3D', gamma_w=1, gamma_b=2.25,
                      gamma_d=DEPTH[arch]),
        cls_head=dict(type='X3DHead', in_channels=432,
                      num_classes=num_classes, **head),
        data_preprocessor=dict(type='ActionDataPreprocessor'))


def stock_train_pipeline(cfg):
    """DecordInit, SampleFrames, DecordDecode, RandomRescale, RandomCrop,
    Flip, FormatShape, PackActionInputs with ``cfg``'s recipe."""
    return [
        dict(type='DecordInit'),
        dict(type='SampleFrames', clip_len=cfg.num_frames,
             frame_interval=cfg.sampling_rate, num_clips=1),
        dict(type='DecordDecode'),
        dict(type='RandomRescale', scale_range=tuple(cfg.train_jitter)),
        dict(type='RandomCrop', size=cfg.train_crop),
        dict(type='Flip', flip_ratio=0.5),
        dict(type='FormatShape', input_format='NCTHW'),
        dict(type='PackActionInputs'),
    ]
