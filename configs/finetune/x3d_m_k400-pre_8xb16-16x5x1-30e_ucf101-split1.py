# X3D-M fine-tuned from Kinetics-400 on UCF101 split 1 (101 classes).
# The network, clip (16 frames every 5th at 30 fps), crops, 10 x 3 test
# views and the per-GPU batch come from ../x3d_m_k400.py (PySlowFast's
# X3D_M.yaml); this file changes the data, the starting weights and the
# schedule. No published X3D recipe exists for UCF101/HMDB51: the schedule
# below is the usual transfer recipe (pretrained weights, the new classifier
# at a higher LR than the pretrained layers, short warm-up + cosine) with
# values chosen, not tuned -- see configs/finetune/README.md.
_base_ = ['../x3d_m_k400.py']

# Data in MMAction2's layout (its tools/data/ucf101/*.sh put the videos in
# data/ucf101/videos/<class>/ and the split files in
# data/ucf101/annotations); tools/data/build_split_lists.py writes the lists.
split = 1  # official train/test split: 1, 2 or 3
data_root = 'data/ucf101/videos'
ann_file_train = f'data/ucf101/ucf101_train_split_{split}_videos.txt'
# The official test list (UCF101 has no separate validation set).
ann_file_val = f'data/ucf101/ucf101_val_split_{split}_videos.txt'
num_classes = 101  # classInd.txt

# Kinetics-400 weights without the 400-way classifier, made with
#   python tools/convert_checkpoint.py x3d_m.pyth \
#       checkpoints/x3d_m_k400_no-classifier.pth --from slowfast \
#       --drop-classifier
# load_from fills every tensor of the model that the file has: the whole
# backbone and the head's conv5/bn5/fc1 (pretrained too); only the new
# cls_head.fc_cls starts from its initialisation. MMEngine logs those two
# as "missing keys"; any other missing key means a wrong file.
load_from = 'checkpoints/x3d_m_k400_no-classifier.pth'

model = dict(
    backbone=dict(
        # -1 trains every stage. On a very small dataset freezing the stem
        # (0) or the stem and the first k stages (k = 1..4) keeps more of
        # the Kinetics features and trains faster.
        frozen_stages=-1),
    cls_head=dict(num_classes=num_classes))

train_dataloader = dict(
    dataset=dict(
        ann_file=ann_file_train,
        data_prefix=dict(video=data_root),
        num_classes=num_classes))
val_dataloader = dict(
    dataset=dict(
        ann_file=ann_file_val,
        data_prefix=dict(video=data_root),
        num_classes=num_classes))
test_dataloader = dict(
    dataset=dict(
        ann_file=ann_file_val,
        data_prefix=dict(video=data_root),
        num_classes=num_classes))

# 30 epochs = 2250 iterations at a total batch of 128 (9537 training videos
# in split 1, 75 iterations an epoch): chosen, a tenth of the 300-epoch
# Kinetics schedule. MMAction2's pretrained fine-tunes on these datasets
# run step schedules of 45 (C3D from Sports-1M, UCF101) and 50 epochs (TSN
# from Kinetics, HMDB51); a cosine that ends at 0 needs fewer.
max_epochs = 30
train_cfg = dict(max_epochs=max_epochs, val_interval=1)

optim_wrapper = dict(
    optimizer=dict(
        # A tenth of the Kinetics SOLVER.BASE_LR 0.1 at the same total batch
        # of 128; it is the LR of the head, which includes the new
        # classifier. Momentum, Nesterov and weight decay 5e-5 stay those of
        # the Kinetics recipe (../_base_/schedules/x3d_sgd_warmup_cosine.py).
        lr=0.01),
    paramwise_cfg=dict(
        # The pretrained backbone learns at a tenth of the head's LR (0.001)
        # so that the large early gradients of the random classifier do not
        # wash out the Kinetics features. MMEngine gives a parameter that
        # matches a custom key that key's settings instead of
        # norm_decay_mult, so the backbone's BN parameters get weight decay
        # 5e-5 here; at LR 0.001 that shrinks them by less than 0.02% over
        # the whole schedule.
        custom_keys=dict(backbone=dict(lr_mult=0.1))))

param_scheduler = [
    dict(
        type='x3d_plugin.WarmupCosineLR',
        max_epochs=max_epochs,
        # 2 of 30 epochs (150 iterations; chosen): the new classifier
        # settles before the pretrained layers see the full LR. The
        # Kinetics recipe, which starts from random weights, warms up over
        # 35 of 300 epochs.
        warmup_epochs=2,
        # Start at a tenth of the LR, as the Kinetics recipe does
        # (SOLVER.WARMUP_START_LR 0.01 / BASE_LR 0.1).
        warmup_start_factor=0.1,
        by_epoch=True,
        convert_to_iter_based=True)
]

# The LR above is for 8 GPUs x 16 clips; MMEngine scales it linearly to the
# total batch used (e.g. 0.00125 on one GPU with batch 16).
auto_scale_lr = dict(enable=True, base_batch_size=128)
