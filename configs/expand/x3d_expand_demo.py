# X3D's expansion search (tools/expand.py) on the embedded demo dataset
# (tools/data/generate_demo_dataset.py): three steps from a one-frame
# network, each candidate trained briefly on 2 CPU cores.
#   python tools/expand.py configs/expand/x3d_expand_demo.py \
#       --work-dir work_dirs/expand_demo
# The data, pipelines and optimiser are the demo's; what follows is the
# proxy schedule every candidate trains with and the search's settings.
_base_ = ['../x3d_xs_demo.py']

# Proxy schedule: 6 epochs, about 1-4 minutes per candidate with one
# thread; J then moves by tens of points from seed to seed
# (docs/expansion_search.md, "The demo search", gives the spread).
proxy_epochs = 6
train_cfg = dict(max_epochs=proxy_epochs, val_interval=proxy_epochs)
param_scheduler = [
    dict(
        type='x3d_plugin.WarmupCosineLR',
        max_epochs=proxy_epochs,
        warmup_epochs=0.5,
        warmup_start_factor=0.1,
        by_epoch=True,
        convert_to_iter_based=True)
]
# One data worker per candidate: candidates train side by side.
train_dataloader = dict(num_workers=1, persistent_workers=False)
val_dataloader = dict(num_workers=1, persistent_workers=False)
test_dataloader = dict(num_workers=1, persistent_workers=False)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=proxy_epochs, max_keep_ckpts=1),
    # No precise BN in the proxy runs (the demo's hook runs every 4th
    # epoch; the final config below has it).
    precise_bn=None)

expansion = dict(
    # The paper starts from X2D: one frame at 112², every factor 1. Here
    # the start is one frame at the demo's 48² with X3D's width and
    # bottleneck factors (a width-1 network does not learn these classes
    # within a 6-epoch proxy, so every candidate would score chance); the
    # single frame spans 8 source frames (X-Fast halves that interval,
    # X-Temporal doubles the clip).
    start=dict(
        num_frames=1,
        sampling_rate=8,
        crop_size=48,
        width_factor=2.0,
        depth_factor=1.0,
        bottleneck_factor=2.25),
    axes=['fast', 'temporal', 'spatial', 'depth', 'width', 'bottleneck'],
    fixed_axes=[],
    # None: the shortest training video's frame count, read from every
    # training video's container header (16 here; --probe-videos N reads
    # a random sample instead).
    max_clip_span=None,
    # The videos are 48 pixels high; a crop of 64 is the largest that
    # still sees new detail after upscaling.
    max_crop=64,
    # Short side range and testing size relative to the crop: the demo
    # config's (crop 48, jitter 48-56, test 48). Kinetics configs leave
    # these out and get PySlowFast's 8/7 and 10/7.
    jitter_ratio=(1.0, 7 / 6),
    test_ratio=1.0,
    # J is the top-1 on this fraction of each class of the training list,
    # held out of the candidates' training (seeded by randomness.seed or
    # --seed): 15 of each class's 100 videos here. 0 would measure J on
    # val_dataloader's list, which the demo shares with its test list, so
    # the tool refuses it.
    val_ratio=0.15,
    # 'top1' keeps the most accurate candidate of a step (the paper's
    # rule); 'top1_per_doubling' the one with the most top-1 gained per
    # doubling of C(X).
    criterion='top1',
    target_gflops=None,
    # How close to target_gflops the final network must be (5%, relative).
    tolerance=0.05,
    steps=3,
    # What trains one candidate: tools/train.py (None) or a script with
    # its command line (CONFIG --work-dir DIR --resume [--seed S]) that
    # logs MMEngine's scalars.json.
    train_script=None,
    # The final config trains with the demo's full 12-epoch schedule.
    final_options={
        'train_cfg.max_epochs': 12,
        'train_cfg.val_interval': 4,
        'param_scheduler': [
            dict(
                type='x3d_plugin.WarmupCosineLR',
                max_epochs=12,
                warmup_epochs=1,
                warmup_start_factor=0.1,
                by_epoch=True,
                convert_to_iter_based=True)
        ],
        'default_hooks.checkpoint.interval': 4,
        'default_hooks.checkpoint.max_keep_ckpts': 2,
        # The proxy runs set it to None: _delete_ replaces that.
        'default_hooks.precise_bn': dict(
            _delete_=True, type='x3d_plugin.PreciseBNHook', num_iters=10,
            interval=4),
    },
)
