# X3D-M fine-tuned from Kinetics-400 on your own videos: a folder with one
# sub-folder of videos per class. Copy this file, set data_root and
# num_classes, then
#   python tools/data/build_folder_lists.py data/my_videos --val-ratio 0.2
#   python tools/train.py configs/finetune/<your copy>.py
# The recipe is the UCF101 config's (X3D-M's network, clip and 10 x 3 test
# views; Kinetics weights without the classifier; backbone at a tenth of the
# head's LR; 2 warm-up epochs into a cosine over 30); see
# configs/finetune/README.md for what to change on small or long videos.
_base_ = ['./x3d_m_k400-pre_8xb16-16x5x1-30e_ucf101-split1.py']

data_root = 'data/my_videos'  # the folder of class sub-folders
# Written by tools/data/build_folder_lists.py into data_root.
ann_file_train = f'{data_root}/train_list_videos.txt'
ann_file_val = f'{data_root}/val_list_videos.txt'
# With --test-ratio the tool writes test_list_videos.txt too; point
# ann_file_test at it to keep the validation videos out of the final score.
ann_file_test = ann_file_val
# One class name a line, in label order; tools/train.py stops before
# training if num_classes is not its number of lines.
label_map = f'{data_root}/label_map.txt'
num_classes = 2  # the number of lines of label_map.txt: set yours

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
        ann_file=ann_file_test,
        data_prefix=dict(video=data_root),
        num_classes=num_classes))
