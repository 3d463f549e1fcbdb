# X3D-XL on Kinetics-400. PySlowFast publishes no XL recipe: X3D-L's
# (configs/Kinetics/X3D_L.yaml) is used, extrapolated: 16x5 clips, jitter
# 356-446, crop 312, test 356 x 3 crops, 256 epochs, LR 0.05 at batch 64.
_base_ = ['./x3d_l_k400.py']

# Paper Table 3: width factor 2.9 -> last stage 280, conv_5 630.
model = dict(
    backbone=dict(arch='xl'),
    cls_head=dict(in_channels=280, mid_channels=630))
