"""MMAction2 1.2.0's X3D (``X3D`` + ``X3DHead``).

``conv5`` sits in MMAction2's backbone; it moves to the head here.
"""
from ..variants import get_variant
from .base import BN, CheckpointFormat, register_format

MMACTION2 = register_format(
    CheckpointFormat(
        'mmaction2',
        rows=[
            (r'backbone\.conv1_s\.conv\.weight',
             'backbone.stem.conv_xy.weight'),
            (r'backbone\.conv1_t\.conv\.weight',
             'backbone.stem.conv_t.weight'),
            (r'backbone\.conv1_t\.bn\.' + BN, 'backbone.stem.bn.{p}'),
            (r'backbone\.layer(?P<stage>[1-4])\.(?P<b>\d+)\.downsample\.conv\.'
             r'weight', 'backbone.layer{layer}.{b}.downsample.0.weight'),
            (r'backbone\.layer(?P<stage>[1-4])\.(?P<b>\d+)\.downsample\.bn\.' +
             BN, 'backbone.layer{layer}.{b}.downsample.1.{p}'),
            (r'backbone\.layer(?P<stage>[1-4])\.(?P<b>\d+)\.conv(?P<n>[123])\.'
             r'conv\.weight', 'backbone.layer{layer}.{b}.conv{n}.weight'),
            (r'backbone\.layer(?P<stage>[1-4])\.(?P<b>\d+)\.conv(?P<n>[123])\.'
             r'bn\.' + BN, 'backbone.layer{layer}.{b}.bn{n}.{p}'),
            (r'backbone\.layer(?P<stage>[1-4])\.(?P<b>\d+)\.se_module\.'
             r'(?P<fc>fc[12])\.(?P<q>weight|bias)',
             'backbone.layer{layer}.{b}.se.{fc}.{q}'),
            (r'backbone\.conv5\.conv\.weight', 'cls_head.conv5.weight'),
            (r'backbone\.conv5\.bn\.' + BN, 'cls_head.bn5.{p}'),
            (r'cls_head\.fc1\.weight', 'cls_head.fc1.weight'),
            (r'cls_head\.fc2\.(?P<q>weight|bias)', 'cls_head.fc_cls.{q}'),
        ]))


def mmaction2_can_build(arch: str) -> bool:
    """Whether MMAction2's X3D can build the variant ``arch``: it starts
    from width 24 (ours from 12 with width factor 2) and doubles it per
    stage without X3D's rounding, so only variants of width factor 2."""
    return get_variant(arch).width_factor == 2.0


def mmaction2_recognizer_cfg(arch: str, num_classes: int, **head) -> dict:
    """Config of MMAction2's own ``Recognizer3D`` with its ``X3D`` and
    ``X3DHead`` for the variant ``arch`` (the network this format's
    checkpoints come from; used by the benchmarks and tests).

    Only the variants :func:`mmaction2_can_build` (XS, S, M, L; not XL).
    """
    variant = get_variant(arch)
    if not mmaction2_can_build(arch):
        raise ValueError(f'MMAction2\'s X3D cannot build X3D-{arch.upper()} '
                         f'(width factor {variant.width_factor}); it builds '
                         'the variants of width factor 2 only')
    return dict(
        type='Recognizer3D',
        backbone=dict(
            type='X3D',
            gamma_w=1,
            gamma_b=variant.bottleneck_factor,
            gamma_d=variant.depth_factor),
        cls_head=dict(
            type='X3DHead',
            in_channels=variant.structure.head_mid_channels,
            num_classes=num_classes,
            **head),
        data_preprocessor=dict(type='ActionDataPreprocessor'))
