"""PySlowFast's X3D checkpoints (``x3d_{xs,s,m,l}.pyth``).

Stages are named ``s2``..``s5``; ``head.lin_5`` is a 1x1x1 conv, which
becomes the linear ``fc1`` (same numbers, 2-D shape).
"""
from .base import BN, CheckpointFormat, register_format

SLOWFAST = register_format(
    CheckpointFormat(
        'slowfast',
        stage_offset=-1,
        rows=[
            (r's1\.pathway0_stem\.conv_xy\.weight',
             'backbone.stem.conv_xy.weight'),
            (r's1\.pathway0_stem\.conv\.weight',
             'backbone.stem.conv_t.weight'),
            (r's1\.pathway0_stem\.bn\.' + BN, 'backbone.stem.bn.{p}'),
            (r's(?P<stage>[2-5])\.pathway0_res(?P<b>\d+)\.branch1\.weight',
             'backbone.layer{layer}.{b}.downsample.0.weight'),
            (r's(?P<stage>[2-5])\.pathway0_res(?P<b>\d+)\.branch1_bn\.' + BN,
             'backbone.layer{layer}.{b}.downsample.1.{p}'),
            (r's(?P<stage>[2-5])\.pathway0_res(?P<b>\d+)\.branch2\.'
             r'(?P<conv>[abc])\.weight',
             'backbone.layer{layer}.{b}.conv{n}.weight'),
            (r's(?P<stage>[2-5])\.pathway0_res(?P<b>\d+)\.branch2\.'
             r'(?P<conv>[abc])_bn\.' + BN,
             'backbone.layer{layer}.{b}.bn{n}.{p}'),
            (r's(?P<stage>[2-5])\.pathway0_res(?P<b>\d+)\.branch2\.se\.'
             r'(?P<fc>fc[12])\.(?P<q>weight|bias)',
             'backbone.layer{layer}.{b}.se.{fc}.{q}'),
            (r'head\.conv_5\.weight', 'cls_head.conv5.weight'),
            (r'head\.conv_5_bn\.' + BN, 'cls_head.bn5.{p}'),
            (r'head\.lin_5\.weight', 'cls_head.fc1.weight'),
            (r'head\.projection\.(?P<q>weight|bias)',
             'cls_head.fc_cls.{q}'),
        ]))
