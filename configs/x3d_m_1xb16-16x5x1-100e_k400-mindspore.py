# X3D-M with the single-machine recipe of the MindSpore X3D tutorial (which
# reports 74.6% top-1 with 10 clips): 16 frames every 5th, short side 256 ->
# random 224 crop, flip, batch 16 on one device, SGD lr 0.0125 momentum 0.9
# weight decay 5e-5, 35 warm-up epochs then cosine to 0 over 100 epochs,
# evaluation with 10 clips (top-1, top-5, loss). For users with one GPU.
_base_ = ['./x3d_m_k400.py']

train_pipeline = [
    # VideoShortEdgeResize(256) at decode time; no scale jitter.
    dict(type='x3d_plugin.PyAVInitAtScale', short_side=256, on_error='skip'),
    dict(
        type='x3d_plugin.SlowFastSampleFrames',
        clip_len=16,
        frame_interval=5),
    dict(type='x3d_plugin.PyAVSparseDecode', on_error='skip'),
    dict(type='RandomCrop', size=224),  # VideoRandomCrop
    dict(type='Flip', flip_ratio=0.5),  # VideoRandomHorizontalFlip
    dict(type='FormatShape', input_format='NCTHW'),  # VideoReOrder
    dict(type='PackActionInputs')
]
# 10 clips, one centre crop each (VideoCenterCrop).
test_pipeline = [
    dict(type='x3d_plugin.PyAVInitAtScale', short_side=256),
    dict(
        type='x3d_plugin.SlowFastSampleFrames',
        clip_len=16,
        frame_interval=5,
        num_clips=10,
        test_mode=True),
    dict(type='x3d_plugin.PyAVSparseDecode'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs')
]
train_dataloader = dict(batch_size=16, dataset=dict(pipeline=train_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

max_epochs = 100
train_cfg = dict(max_epochs=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=0.0125))
param_scheduler = [
    dict(
        type='x3d_plugin.WarmupCosineLR',
        max_epochs=max_epochs,
        warmup_epochs=35,
        # The tutorial does not give the warm-up's start; PySlowFast's ratio
        # (WARMUP_START_LR 0.01 / BASE_LR 0.1) is used.
        warmup_start_factor=0.1,
        by_epoch=True,
        convert_to_iter_based=True)
]
# The LR is the tutorial's for one device with batch 16: no rescaling.
auto_scale_lr = dict(enable=False, base_batch_size=16)
# VideoRescale + VideoNormalize: [0, 1] pixels, mean 0.45 / std 0.225
# (inherited data_preprocessor). The tutorial also reports the loss; MMEngine
# logs it during training.
test_evaluator = dict(type='AccMetric', metric_list=('top_k_accuracy', ))
