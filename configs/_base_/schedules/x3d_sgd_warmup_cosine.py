# PySlowFast's X3D recipe (configs/Kinetics/X3D_{XS,S,M}.yaml and defaults):
# SGD, momentum 0.9, Nesterov, weight decay 5e-5 and none on BN, base LR 0.1
# at a total batch of 128, 300 epochs, half-period cosine over all of them,
# 35 warm-up epochs starting at LR 0.01. X3D-L/XL override epochs and LR.
max_epochs = 300  # SOLVER.MAX_EPOCH
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_begin=1,
    val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    optimizer=dict(
        type='SGD',
        lr=0.1,  # SOLVER.BASE_LR
        momentum=0.9,  # SOLVER.MOMENTUM
        nesterov=True,  # SOLVER.NESTEROV
        weight_decay=5e-5),  # SOLVER.WEIGHT_DECAY
    paramwise_cfg=dict(norm_decay_mult=0.0))  # BN.WEIGHT_DECAY = 0.0

param_scheduler = [
    dict(
        type='x3d_plugin.WarmupCosineLR',
        max_epochs=max_epochs,
        warmup_epochs=35,  # SOLVER.WARMUP_EPOCHS
        warmup_start_factor=0.1,  # SOLVER.WARMUP_START_LR 0.01 / BASE_LR 0.1
        by_epoch=True,
        convert_to_iter_based=True)
]

# The LR above is for a total batch of 128 (8 GPUs x 16); MMEngine scales it
# (and so the warm-up start) linearly to the batch actually used.
auto_scale_lr = dict(enable=True, base_batch_size=128)
