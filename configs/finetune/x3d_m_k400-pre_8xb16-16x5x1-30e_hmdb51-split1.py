# X3D-M fine-tuned from Kinetics-400 on HMDB51 split 1 (51 classes): the
# recipe of the UCF101 config (network, clip and test views of X3D-M,
# Kinetics weights without the classifier, backbone at a tenth of the head's
# LR, 2 warm-up epochs into a cosine over 30) on HMDB51's data.
_base_ = ['./x3d_m_k400-pre_8xb16-16x5x1-30e_ucf101-split1.py']

# MMAction2's layout (its tools/data/hmdb51/*.sh put the videos in
# data/hmdb51/videos/<class>/ and the split files in
# data/hmdb51/annotations); tools/data/build_split_lists.py writes the lists.
split = 1  # official split: 1, 2 or 3
data_root = 'data/hmdb51/videos'
ann_file_train = f'data/hmdb51/hmdb51_train_split_{split}_videos.txt'
# The official test list (HMDB51 has no separate validation set).
ann_file_val = f'data/hmdb51/hmdb51_val_split_{split}_videos.txt'
num_classes = 51  # the <class>_test_split1.txt files

model = dict(cls_head=dict(num_classes=num_classes))
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

# 3570 training videos in split 1: an epoch is 28 iterations at a total
# batch of 128, so 30 epochs are 840 iterations and the 2 warm-up epochs 56.
# PreciseBN's 200 batches (PySlowFast BN.NUM_BATCHES_PRECISE) are more than
# an epoch per GPU here; the hook then uses every training batch once.
