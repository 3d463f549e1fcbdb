# TPN (Yang et al., "Temporal Pyramid Network for Action Recognition",
# CVPR 2020) over the last two stages of X3D-M, on Kinetics-400. Data,
# pipelines and schedule are X3D-M's (../x3d_m_k400.py); the neck and head
# are laid out as MMAction2's configs/_base_/models/tpn_slowonly_r50.py,
# with X3D-M's stage widths (96, 192) in place of SlowOnly-R50's
# (1024, 2048). No result of this recipe has been measured.
_base_ = ['../x3d_m_k400.py']

num_classes = 400  # Kinetics-400
# X3D-M layer3 and layer4 (out_indices 2 and 3): 96 x 16 x 14 x 14 and
# 192 x 16 x 7 x 7 for a 16 x 224 x 224 clip.
stage_widths = (96, 192)
# TPN-SlowOnly's neck width, 1024, is half its top stage's 2048; TPN's
# grouped convolutions (groups=32) need widths that are multiples of 32.
neck_width = 96

model = dict(
    backbone=dict(out_indices=(2, 3)),
    neck=dict(
        type='TPN',
        in_channels=stage_widths,
        out_channels=neck_width,
        # One stride-2 conv brings layer3 (96, 14x14) to layer4's width
        # and size (192, 7x7), as res4 -> res5 in TPN-SlowOnly.
        spatial_modulation_cfg=dict(
            in_channels=stage_widths, out_channels=stage_widths[-1]),
        # Temporal max-pooling by 8 at both levels, TPN-SlowOnly's rate:
        # X3D-M's 16 frames become 2 (SlowOnly's 8 become 1).
        temporal_modulation_cfg=dict(downsample_scales=(8, 8)),
        upsample_cfg=dict(scale_factor=(1, 1, 1)),  # TPN-SlowOnly
        downsample_cfg=dict(downsample_scale=(1, 1, 1)),  # TPN-SlowOnly
        level_fusion_cfg=dict(
            in_channels=(neck_width, neck_width),
            mid_channels=(neck_width, neck_width),
            # The top stage's width, as 2048 in TPN-SlowOnly.
            out_channels=stage_widths[-1],
            downsample_scales=((1, 1, 1), (1, 1, 1))),
        # Auxiliary classifier on layer3, weight 0.5 (TPN-SlowOnly).
        aux_head_cfg=dict(out_channels=num_classes, loss_weight=0.5)),
    cls_head=dict(
        _delete_=True,
        type='TPNHead',
        num_classes=num_classes,
        # TPN's pyramid fusion always outputs 2048 channels.
        in_channels=2048,
        spatial_type='avg',
        consensus=dict(type='AvgConsensus', dim=1),
        dropout_ratio=0.5,  # X3D's MODEL.DROPOUT_RATE and TPN-SlowOnly's
        init_std=0.01,  # TPN-SlowOnly
        average_clips='prob'),
    # TPNHead scores the pooled map with its classifier as a 1x1x1 conv
    # (TPN-SlowOnly's test_cfg).
    test_cfg=dict(fcn_test=True))
