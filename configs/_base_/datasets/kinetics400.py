# Kinetics-400 in MMAction2's layout (see docs/training.md,
# "Kinetics-400 data").
# Variant configs add the pipelines and the per-GPU batch size.
dataset_type = 'x3d_plugin.CheckedVideoDataset'
data_root = 'data/kinetics400/videos_train'
data_root_val = 'data/kinetics400/videos_val'
ann_file_train = 'data/kinetics400/kinetics400_train_list_videos.txt'
ann_file_val = 'data/kinetics400/kinetics400_val_list_videos.txt'
ann_file_test = 'data/kinetics400/kinetics400_val_list_videos.txt'
num_classes = 400

train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    # DefaultSampler whose samples are augmented from (seed, epoch, index):
    # a resumed run replays the uninterrupted one exactly.
    sampler=dict(type='x3d_plugin.SeededSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_train,
        data_prefix=dict(video=data_root),
        num_classes=num_classes,
        # Unreadable videos are replaced by other samples, at most 10 times.
        max_refetch=10))
val_dataloader = dict(
    batch_size=16,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_val,
        data_prefix=dict(video=data_root_val),
        num_classes=num_classes,
        test_mode=True))
test_dataloader = dict(
    batch_size=1,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        ann_file=ann_file_test,
        data_prefix=dict(video=data_root_val),
        num_classes=num_classes,
        test_mode=True))

val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator
