custom_imports = dict(imports=['x3d_plugin'], allow_failed_imports=False)
default_scope = 'mmaction'

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, ignore_last=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Every epoch, the last 10 kept, plus the best top-1 (PySlowFast keeps
    # all; 10 bounds the disk a 300-epoch run uses).
    checkpoint=dict(
        type='CheckpointHook',
        interval=1,
        max_keep_ckpts=10,
        save_best='acc/top1',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    sync_buffers=dict(type='SyncBuffersHook'))

custom_hooks = [
    # PySlowFast BN.USE_PRECISE_STATS / BN.NUM_BATCHES_PRECISE = 200.
    dict(type='x3d_plugin.PreciseBNHook', num_iters=200, interval=1),
    dict(type='x3d_plugin.SkippedVideosHook'),
    # Stop at a NaN/inf loss before it reaches the weights; on SIGTERM save
    # iter_N.pth and exit 0. A config that sets its own custom_hooks must
    # list these two again (docs/fault_tolerance.md, "The hooks").
    dict(type='x3d_plugin.NonFiniteLossHook', max_skips=0),
    dict(type='x3d_plugin.PreemptionHook'),
]

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # x3d_plugin switches to gloo on a machine without CUDA.
    dist_cfg=dict(backend='nccl'))

log_processor = dict(type='LogProcessor', window_size=20, by_epoch=True)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='ActionVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
