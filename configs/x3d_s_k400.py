# X3D-S on Kinetics-400. Numbers from PySlowFast configs/Kinetics/X3D_S.yaml unless noted.
_base_ = [
    './_base_/models/x3d.py', './_base_/datasets/kinetics400.py',
    './_base_/schedules/x3d_sgd_warmup_cosine.py',
    './_base_/default_runtime.py'
]

model = dict(backbone=dict(arch='s'))

num_frames = 13  # DATA.NUM_FRAMES
sampling_rate = 6  # DATA.SAMPLING_RATE (at DATA.TARGET_FPS 30)
train_jitter = (182, 228)  # DATA.TRAIN_JITTER_SCALES (short side)
train_crop = 160  # DATA.TRAIN_CROP_SIZE
test_size = 182  # DATA.TEST_CROP_SIZE: short side and 3-crop size

train_pipeline = [
    dict(
        type='x3d_plugin.PyAVInitAtScale',
        short_side=train_jitter,
        on_error='skip'),
    dict(
        type='x3d_plugin.SlowFastSampleFrames',
        clip_len=num_frames,
        frame_interval=sampling_rate),
    dict(type='x3d_plugin.PyAVSparseDecode', on_error='skip'),
    dict(type='RandomCrop', size=train_crop),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
# Validation during training is cheaper than testing: 1 clip, 1 centre
# crop of the training size.
val_pipeline = [
    dict(type='x3d_plugin.PyAVInitAtScale', short_side=train_jitter[0]),
    dict(
        type='x3d_plugin.SlowFastSampleFrames',
        clip_len=num_frames,
        frame_interval=sampling_rate,
        num_clips=1,
        test_mode=True),
    dict(type='x3d_plugin.PyAVSparseDecode'),
    dict(type='CenterCrop', crop_size=train_crop),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
# Testing: 10 temporal clips x 3 spatial crops (TEST.NUM_ENSEMBLE_VIEWS,
# TEST.NUM_SPATIAL_CROPS), softmax scores averaged per video.
test_pipeline = [
    dict(type='x3d_plugin.PyAVInitAtScale', short_side=test_size),
    dict(
        type='x3d_plugin.SlowFastSampleFrames',
        clip_len=num_frames,
        frame_interval=sampling_rate,
        num_clips=10,
        test_mode=True),
    dict(type='x3d_plugin.PyAVSparseDecode'),
    dict(type='ThreeCrop', crop_size=test_size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]

# 16 clips per GPU: the reference batch of 128 on 8 GPUs.
train_dataloader = dict(batch_size=16, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
