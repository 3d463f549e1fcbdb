# X3D recognizer; variant configs set backbone.arch (and the head widths for
# XL). PySlowFast normalises [0, 1] pixels with mean 0.45 and std 0.225
# (DATA.MEAN / DATA.STD); on [0, 255] pixels that is 114.75 and 57.375.
model = dict(
    type='Recognizer3D',
    backbone=dict(type='x3d_plugin.X3D', arch='m', zero_init_residual=True),
    cls_head=dict(
        type='x3d_plugin.X3DHead',
        num_classes=400,
        in_channels=192,  # last stage width (XS-L)
        mid_channels=432,  # PySlowFast conv_5 width (XS-L)
        fc_channels=2048,  # X3D.DIM_C5
        dropout_ratio=0.5,  # MODEL.DROPOUT_RATE
        # Testing averages the softmax scores of all views of a video.
        average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor',
        mean=[114.75, 114.75, 114.75],
        std=[57.375, 57.375, 57.375],
        format_shape='NCTHW'))
