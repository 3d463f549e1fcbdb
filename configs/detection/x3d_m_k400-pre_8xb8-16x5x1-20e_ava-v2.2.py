# X3D-M as the backbone of MMAction2's AVA v2.2 detector (X3D paper Sec. 5.3).
# The paper follows the SlowFast detector (Feichtenhofer et al., ICCV 2019,
# "Detection architecture"): Faster R-CNN-style on precomputed person boxes,
# the last stage at spatial stride 1 with dilation 2, frame-wise RoIAlign on
# its feature map after temporal average pooling, spatial max pooling, a
# per-class sigmoid classifier. Numbers from PySlowFast unless noted:
# defaults.py (DETECTION.*), configs/Kinetics/X3D_M.yaml (the clip) and
# configs/AVA/SLOW_8x8_R50_SHORT.yaml (the AVA data and schedule; PySlowFast
# has no X3D AVA config, and the X3D paper's own schedule is not used here).
# Needs: mmdet 3.3.0; the K400 X3D-M weights converted by
# tools/convert_checkpoint.py (docs/checkpoints.md, "Converting official
# checkpoints").
_base_ = ['../_base_/default_runtime.py']
# MMDetection (FastRCNN) on mmcv-lite: the second import installs the
# placeholder for mmcv's compiled ops (x3d_plugin/compat/detection.py).
custom_imports = dict(
    imports=['x3d_plugin', 'x3d_plugin.compat.mmdet_on_mmcv_lite'],
    allow_failed_imports=False)

# X3D-M trained on Kinetics-400 (PySlowFast x3d_m.pyth, converted). For
# K600 pre-training point this at the converted K600 checkpoint.
pretrained = 'checkpoints/x3d_m_k400.pth'

num_frames = 16  # X3D_M.yaml DATA.NUM_FRAMES
sampling_rate = 5  # X3D_M.yaml DATA.SAMPLING_RATE (AVA frames are 30 fps)
train_jitter = (256, 320)  # AVA DATA.TRAIN_JITTER_SCALES (short side)
train_crop = 224  # AVA DATA.TRAIN_CROP_SIZE (= X3D-M's training crop)
test_size = 256  # AVA DATA.TEST_CROP_SIZE: short side, whole frame

# FastRCNN and the AVA heads live in MMDetection's registry scope. MMEngine
# finds a scope-prefixed name only among the current scope's children and
# the root's, and 'x3d_plugin' is a child of 'mmaction', so the plugin's
# modules are built with _scope_='mmaction'.
model = dict(
    type='FastRCNN',
    _scope_='mmdet',
    backbone=dict(
        type='x3d_plugin.X3D',
        _scope_='mmaction',
        arch='m',
        # SlowFast detector: the last stage at stride 1, dilated by 2
        # (RESNET.SPATIAL_STRIDES [1, 2, 2, 1], SPATIAL_DILATIONS
        # [1, 1, 1, 2] in the AVA config); the map is 1/16 of the input.
        spatial_strides=(2, 2, 2, 1),
        spatial_dilations=(1, 1, 1, 2),
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    roi_head=dict(
        type='AVARoIHead',
        bbox_roi_extractor=dict(
            type='x3d_plugin.RoIAlignExtractor3D',
            _scope_='mmaction',
            roi_layer_type='RoIAlign',
            featmap_stride=16,  # DETECTION.SPATIAL_SCALE_FACTOR
            output_size=7,  # DETECTION.ROI_XFORM_RESOLUTION
            sampling_ratio=0,  # head_helper.ResNetRoIHead's ROIAlign
            aligned=True,  # DETECTION.ALIGNED
            # ResNetRoIHead averages over time before RoIAlign.
            with_temporal_pool=True),
        bbox_head=dict(
            type='BBoxHeadAVA',
            background_class=True,
            in_channels=192,  # X3D-M's last stage width
            num_classes=81,  # 80 AVA actions + MMAction2's background slot
            multilabel=True,  # MODEL.LOSS_FUNC bce, HEAD_ACT sigmoid
            # ResNetRoIHead: spatial max pool, then dropout, then linear.
            spatial_pool_type='max',
            dropout_before_pool=False,
            dropout_ratio=0.5)),  # MODEL.DROPOUT_RATE
    # X3D's normalisation (X3D_M.yaml DATA.MEAN 0.45, DATA.STD 0.225 on
    # [0, 1] pixels).
    data_preprocessor=dict(
        type='mmaction.ActionDataPreprocessor',
        mean=[114.75, 114.75, 114.75],
        std=[57.375, 57.375, 57.375],
        format_shape='NCTHW'),
    train_cfg=dict(
        rcnn=dict(
            # Training samples: ground-truth boxes and proposals with IoU >
            # 0.9 to one (SlowFast paper, AVA; MMAction2's AVA configs).
            assigner=dict(
                type='MaxIoUAssignerAVA',
                pos_iou_thr=0.9,
                neg_iou_thr=0.9,
                min_pos_iou=0.9),
            sampler=dict(
                type='RandomSampler',
                num=32,
                pos_fraction=1,
                neg_pos_ub=-1,
                add_gt_as_proposals=True),
            pos_weight=1.0)),
    test_cfg=dict(rcnn=None))

dataset_type = 'AVADataset'
data_root = 'data/ava/rawframes'
anno_root = 'data/ava/annotations'
ann_file_train = f'{anno_root}/ava_train_v2.2.csv'
ann_file_val = f'{anno_root}/ava_val_v2.2.csv'
exclude_file_train = f'{anno_root}/ava_train_excluded_timestamps_v2.2.csv'
exclude_file_val = f'{anno_root}/ava_val_excluded_timestamps_v2.2.csv'
label_file = f'{anno_root}/ava_action_list_v2.2_for_activitynet_2019.pbtxt'
# The person boxes of the SlowFast paper (Faster R-CNN, 93.9% recall);
# boxes scoring >= 0.9 are used (AVA.DETECTION_SCORE_THRESH).
proposal_file_train = (f'{anno_root}/ava_dense_proposals_train.FAIR.'
                       'recall_93.9.pkl')
proposal_file_val = f'{anno_root}/ava_dense_proposals_val.FAIR.recall_93.9.pkl'

train_pipeline = [
    dict(
        type='SampleAVAFrames',
        clip_len=num_frames,
        frame_interval=sampling_rate),
    dict(type='RawFrameDecode'),
    dict(type='RandomRescale', scale_range=train_jitter),
    dict(type='RandomCrop', size=train_crop),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW', collapse=True),
    dict(type='PackActionInputs')
]
# One clip centred on the key frame, the whole frame at short side 256.
val_pipeline = [
    dict(
        type='SampleAVAFrames',
        clip_len=num_frames,
        frame_interval=sampling_rate,
        test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, test_size)),
    dict(type='FormatShape', input_format='NCTHW', collapse=True),
    dict(type='PackActionInputs')
]

# 8 clips per GPU on 8 GPUs: TRAIN.BATCH_SIZE 64.
train_dataloader = dict(
    batch_size=8,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_train,
        exclude_file=exclude_file_train,
        pipeline=train_pipeline,
        label_file=label_file,
        proposal_file=proposal_file_train,
        data_prefix=dict(img=data_root)))
val_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_val,
        exclude_file=exclude_file_val,
        pipeline=val_pipeline,
        label_file=label_file,
        proposal_file=proposal_file_val,
        data_prefix=dict(img=data_root),
        test_mode=True))
test_dataloader = val_dataloader

# Frame-level mAP at IoU 0.5 over the 60 evaluated classes.
# MMAction2's AVAMetric with a process pool that is closed after use.
val_evaluator = dict(
    type='x3d_plugin.AVAMetric',
    ann_file=ann_file_val,
    label_file=label_file,
    exclude_file=exclude_file_val)
test_evaluator = val_evaluator

train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=20, val_begin=1,
    val_interval=5)  # SOLVER.MAX_EPOCH, TRAIN.EVAL_PERIOD
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    # SOLVER.WARMUP_EPOCHS 5 from WARMUP_START_LR 0.000125 (of 0.1).
    dict(
        type='LinearLR',
        start_factor=0.00125,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    # SOLVER.STEPS [0, 10, 15, 20], LRS [1, 0.1, 0.01, 0.001].
    dict(
        type='MultiStepLR',
        begin=0,
        end=20,
        by_epoch=True,
        milestones=[10, 15],
        gamma=0.1)
]

optim_wrapper = dict(
    # SOLVER.BASE_LR 0.1, MOMENTUM 0.9, WEIGHT_DECAY 1e-7.
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-7),
    # MMAction2's AVA configs (PySlowFast does not clip).
    clip_grad=dict(max_norm=40, norm_type=2))

# No precise BN on AVA (BN.USE_PRECISE_STATS False); the base runtime's
# other hooks stay.
default_hooks = dict(
    checkpoint=dict(save_best='mAP/overall', rule='greater'),
    precise_bn=None)

# base_batch_size = 8 GPUs x 8 clips.
auto_scale_lr = dict(enable=False, base_batch_size=64)
