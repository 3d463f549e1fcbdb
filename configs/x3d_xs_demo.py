# X3D-XS trained from scratch on the embedded demo dataset (8 synthetic
# motion classes, see tools/data/generate_demo_dataset.py): about 10
# minutes on 2 CPU cores. `bash tools/quickstart.sh` generates the data,
# trains and tests with 2 clips x 3 crops.
_base_ = [
    './_base_/models/x3d.py', './_base_/schedules/x3d_sgd_warmup_cosine.py',
    './_base_/default_runtime.py'
]

data_root = 'data/x3d_demo'
num_classes = 8
model = dict(
    backbone=dict(arch='xs'),
    cls_head=dict(num_classes=num_classes, dropout_ratio=0.2))

num_frames = 8
# 8 frames every 2nd: a clip spans the whole 16-frame video, so a turn or
# a change of size is seen from start to end.
sampling_rate = 2  # in frames of the file (target_fps=None below)
train_jitter = (48, 56)
train_crop = 48

# No horizontal flip: it would turn "moving left" into "moving right".
train_pipeline = [
    dict(
        type='x3d_plugin.PyAVInitAtScale',
        short_side=train_jitter,
        on_error='skip'),
    dict(
        type='x3d_plugin.SlowFastSampleFrames',
        clip_len=num_frames,
        frame_interval=sampling_rate,
        target_fps=None),
    dict(type='x3d_plugin.PyAVSparseDecode', on_error='skip'),
    dict(type='RandomCrop', size=train_crop),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
val_pipeline = [
    dict(type='x3d_plugin.PyAVInitAtScale', short_side=train_crop),
    dict(
        type='x3d_plugin.SlowFastSampleFrames',
        clip_len=num_frames,
        frame_interval=sampling_rate,
        target_fps=None,
        test_mode=True),
    dict(type='x3d_plugin.PyAVSparseDecode'),
    dict(type='CenterCrop', crop_size=train_crop),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
test_pipeline = [
    dict(type='x3d_plugin.PyAVInitAtScale', short_side=train_crop),
    dict(
        type='x3d_plugin.SlowFastSampleFrames',
        clip_len=num_frames,
        frame_interval=sampling_rate,
        num_clips=2,
        target_fps=None,
        test_mode=True),
    dict(type='x3d_plugin.PyAVSparseDecode'),
    dict(type='ThreeCrop', crop_size=train_crop),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]


def _dataset(split, pipeline, test_mode):
    return dict(
        type='x3d_plugin.CheckedVideoDataset',
        ann_file=f'{data_root}/{split}_list_videos.txt',
        data_prefix=dict(video=data_root),
        num_classes=num_classes,
        pipeline=pipeline,
        test_mode=test_mode)


train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    # DefaultSampler whose samples are augmented from (seed, epoch, index):
    # a resumed run replays the uninterrupted one exactly.
    sampler=dict(type='x3d_plugin.SeededSampler', shuffle=True),
    dataset=_dataset('train', train_pipeline, False))
val_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=_dataset('val', val_pipeline, True))
test_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=_dataset('val', test_pipeline, True))
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

# 16 epochs. Training from scratch on 800 videos is sensitive to rounding:
# the same seed under two numerics (2-core AVX-512 Xeon, PyTorch and the
# kernel at full ISA vs limited to AVX2) reached 85.9% and 96.9%
# validation top-1 with a 12-epoch schedule, which ends while accuracy
# still climbs; this 16-epoch one reached 98.4% and 97.7% after 12 epochs
# and 99.2% and 100% after 16 (docs/demo.md).
max_epochs = 16
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
# From scratch on 800 videos in minutes, AdamW gets X3D moving much
# sooner than the SGD of the Kinetics recipe (which needs hundreds of epochs);
# the schedule is the same warm-up + cosine.
optim_wrapper = dict(
    _delete_=True,
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0))
param_scheduler = [
    dict(
        type='x3d_plugin.WarmupCosineLR',
        max_epochs=max_epochs,
        warmup_epochs=1,
        warmup_start_factor=0.1,
        by_epoch=True,
        convert_to_iter_based=True)
]
# The LR is chosen for this batch; do not rescale it.
auto_scale_lr = dict(enable=False, base_batch_size=16)

default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=4, max_keep_ckpts=2),
    precise_bn=dict(num_iters=10, interval=4))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
