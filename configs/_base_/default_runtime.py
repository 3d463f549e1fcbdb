custom_imports = dict(imports=['x3d_plugin'], allow_failed_imports=False)
default_scope = 'mmaction'

# x3d_plugin's runner: verified checkpoint loads, clear auto-resume, CPU-only
# distributed training, process state restored after training
# (docs/fault_tolerance.md). Without it MMEngine's Runner runs the config.
runner_type = 'x3d_plugin.X3DRunner'

# The plugin's hooks are default_hooks entries, so a config that sets its
# own custom_hooks keeps them; `name=None` removes one (e.g.
# default_hooks = dict(precise_bn=None)).
default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, ignore_last=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Every epoch, the last 10 kept, plus the best top-1 (PySlowFast keeps
    # all; 10 bounds the disk a 300-epoch run uses). Written atomically.
    checkpoint=dict(
        type='x3d_plugin.SafeCheckpointHook',
        interval=1,
        max_keep_ckpts=10,
        save_best='acc/top1',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    sync_buffers=dict(type='SyncBuffersHook'),
    # PySlowFast BN.USE_PRECISE_STATS / BN.NUM_BATCHES_PRECISE = 200.
    precise_bn=dict(type='x3d_plugin.PreciseBNHook', num_iters=200,
                    interval=1),
    skipped_videos=dict(type='x3d_plugin.SkippedVideosHook'),
    # Stop at a NaN/inf loss before it reaches the weights; on SIGTERM save
    # iter_N.pth and exit 0.
    non_finite_loss=dict(type='x3d_plugin.NonFiniteLossHook', max_skips=0),
    preemption=dict(type='x3d_plugin.PreemptionHook'))
custom_hooks = []

# With several processes, rank 0's buffers (BN statistics) are broadcast at
# every forward, as torch's DDP does by default (MMEngine passes False), so
# all processes hold the statistics the checkpoint saves and a resumed run
# continues with the same ones.
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', broadcast_buffers=True)

env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # X3DRunner uses gloo on a machine without CUDA.
    dist_cfg=dict(backend='nccl'))

log_processor = dict(type='LogProcessor', window_size=20, by_epoch=True)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='ActionVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
