# X3D-L on Kinetics-400. Numbers from PySlowFast configs/Kinetics/X3D_L.yaml unless noted.
_base_ = [
    './_base_/models/x3d.py', './_base_/datasets/kinetics400.py',
    './_base_/schedules/x3d_sgd_warmup_cosine.py',
    './_base_/default_runtime.py'
]

model = dict(backbone=dict(arch='l'))

num_frames = 16  # DATA.NUM_FRAMES
sampling_rate = 5  # DATA.SAMPLING_RATE (at DATA.TARGET_FPS 30)
train_jitter = (356, 446)  # DATA.TRAIN_JITTER_SCALES (short side)
train_crop = 312  # DATA.TRAIN_CROP_SIZE
test_size = 356  # DATA.TEST_CROP_SIZE: short side and 3-crop size

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

# 8 clips per GPU: the reference batch of 64 on 8 GPUs.
train_dataloader = dict(batch_size=8, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

# X3D-L: 256 epochs, base LR 0.05 at a total batch of 64.
max_epochs = 256  # SOLVER.MAX_EPOCH
train_cfg = dict(max_epochs=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.05))  # SOLVER.BASE_LR
param_scheduler = [
    dict(
        type='x3d_plugin.WarmupCosineLR',
        max_epochs=max_epochs,
        warmup_epochs=35,  # SOLVER.WARMUP_EPOCHS
        warmup_start_factor=0.2,  # WARMUP_START_LR 0.01 / BASE_LR 0.05
        by_epoch=True,
        convert_to_iter_based=True)
]
auto_scale_lr = dict(base_batch_size=64)
