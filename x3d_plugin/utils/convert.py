"""Convert X3D checkpoints of other implementations to ``x3d_plugin`` keys.

One mapping table per source format. A table row is ``(pattern, target)``:
``pattern`` is matched against the whole source key; ``target`` is a format
string filled with the pattern's named groups, where ``{layer}`` is the
plugin's 1-based stage index (computed from the group ``stage`` and the
table's offset). Every source key must match exactly one row and every key of
the plugin model must be produced, or the conversion fails.

What the formats differ in besides names:

* PySlowFast (``x3d_{xs,s,m,l}.pyth``): ``head.lin_5`` is a 1x1x1 conv; it
  becomes the linear ``fc1`` (same numbers, 2-D shape).
* PyTorchVideo (``create_x3d`` / hub): the stem's ``conv_t`` holds the 1x3x3
  *spatial* conv and ``conv_xy`` the 5x1x1 temporal one (the names are
  swapped), and the first stage's shortcut has no BN (``create_res_block``
  adds one only where the width changes). The converter gives that shortcut
  an identity BN (weight 1, bias 0, mean 0, var 1 - eps), which reproduces
  the outputs exactly in eval mode; fine-tuning then trains it as PySlowFast
  does.
* MMAction2 1.2.0 (``X3D`` + ``X3DHead``): ``conv5`` sits in the backbone;
  it moves to the head.
"""
import re
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from x3d_plugin.models.backbones.x3d import X3D, x3d_structure

_BN = r'(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)'

# (source pattern, target); `{layer}` = int(stage) + offset.
SLOWFAST_TABLE = dict(
    offset=-1,
    rows=[
        (r's1\.pathway0_stem\.conv_xy\.weight', 'backbone.stem.conv_xy.weight'),
        (r's1\.pathway0_stem\.conv\.weight', 'backbone.stem.conv_t.weight'),
        (r's1\.pathway0_stem\.bn\.' + _BN, 'backbone.stem.bn.{p}'),
        (r's(?P<stage>[2-5])\.pathway0_res(?P<b>\d+)\.branch1\.weight',
         'backbone.layer{layer}.{b}.downsample.0.weight'),
        (r's(?P<stage>[2-5])\.pathway0_res(?P<b>\d+)\.branch1_bn\.' + _BN,
         'backbone.layer{layer}.{b}.downsample.1.{p}'),
        (r's(?P<stage>[2-5])\.pathway0_res(?P<b>\d+)\.branch2\.'
         r'(?P<conv>[abc])\.weight', 'backbone.layer{layer}.{b}.conv{n}.weight'),
        (r's(?P<stage>[2-5])\.pathway0_res(?P<b>\d+)\.branch2\.'
         r'(?P<conv>[abc])_bn\.' + _BN, 'backbone.layer{layer}.{b}.bn{n}.{p}'),
        (r's(?P<stage>[2-5])\.pathway0_res(?P<b>\d+)\.branch2\.se\.'
         r'(?P<fc>fc[12])\.(?P<q>weight|bias)',
         'backbone.layer{layer}.{b}.se.{fc}.{q}'),
        (r'head\.conv_5\.weight', 'cls_head.conv5.weight'),
        (r'head\.conv_5_bn\.' + _BN, 'cls_head.bn5.{p}'),
        (r'head\.lin_5\.weight', 'cls_head.fc1.weight'),
        (r'head\.projection\.(?P<q>weight|bias)', 'cls_head.fc_cls.{q}'),
    ])

PYTORCHVIDEO_TABLE = dict(
    offset=0,
    rows=[
        # Swapped names: PyTorchVideo's conv_t is the 1x3x3 spatial conv.
        (r'blocks\.0\.conv\.conv_t\.weight', 'backbone.stem.conv_xy.weight'),
        (r'blocks\.0\.conv\.conv_xy\.weight', 'backbone.stem.conv_t.weight'),
        (r'blocks\.0\.norm\.' + _BN, 'backbone.stem.bn.{p}'),
        (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch1_conv\.'
         r'weight', 'backbone.layer{layer}.{b}.downsample.0.weight'),
        (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch1_norm\.' +
         _BN, 'backbone.layer{layer}.{b}.downsample.1.{p}'),
        (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch2\.'
         r'conv_(?P<conv>[abc])\.weight',
         'backbone.layer{layer}.{b}.conv{n}.weight'),
        (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch2\.'
         r'norm_(?P<conv>[ac])\.' + _BN, 'backbone.layer{layer}.{b}.bn{n}.{p}'),
        (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch2\.'
         r'norm_b\.0\.' + _BN, 'backbone.layer{layer}.{b}.bn2.{p}'),
        (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch2\.'
         r'norm_b\.1\.block\.0\.(?P<q>weight|bias)',
         'backbone.layer{layer}.{b}.se.fc1.{q}'),
        (r'blocks\.(?P<stage>[1-4])\.res_blocks\.(?P<b>\d+)\.branch2\.'
         r'norm_b\.1\.block\.2\.(?P<q>weight|bias)',
         'backbone.layer{layer}.{b}.se.fc2.{q}'),
        (r'blocks\.5\.pool\.pre_conv\.weight', 'cls_head.conv5.weight'),
        (r'blocks\.5\.pool\.pre_norm\.' + _BN, 'cls_head.bn5.{p}'),
        (r'blocks\.5\.pool\.post_conv\.weight', 'cls_head.fc1.weight'),
        (r'blocks\.5\.proj\.(?P<q>weight|bias)', 'cls_head.fc_cls.{q}'),
    ])

MMACTION2_TABLE = dict(
    offset=0,
    rows=[
        (r'backbone\.conv1_s\.conv\.weight', 'backbone.stem.conv_xy.weight'),
        (r'backbone\.conv1_t\.conv\.weight', 'backbone.stem.conv_t.weight'),
        (r'backbone\.conv1_t\.bn\.' + _BN, 'backbone.stem.bn.{p}'),
        (r'backbone\.layer(?P<stage>[1-4])\.(?P<b>\d+)\.downsample\.conv\.'
         r'weight', 'backbone.layer{layer}.{b}.downsample.0.weight'),
        (r'backbone\.layer(?P<stage>[1-4])\.(?P<b>\d+)\.downsample\.bn\.' +
         _BN, 'backbone.layer{layer}.{b}.downsample.1.{p}'),
        (r'backbone\.layer(?P<stage>[1-4])\.(?P<b>\d+)\.conv(?P<n>[123])\.'
         r'conv\.weight', 'backbone.layer{layer}.{b}.conv{n}.weight'),
        (r'backbone\.layer(?P<stage>[1-4])\.(?P<b>\d+)\.conv(?P<n>[123])\.'
         r'bn\.' + _BN, 'backbone.layer{layer}.{b}.bn{n}.{p}'),
        (r'backbone\.layer(?P<stage>[1-4])\.(?P<b>\d+)\.se_module\.'
         r'(?P<fc>fc[12])\.(?P<q>weight|bias)',
         'backbone.layer{layer}.{b}.se.{fc}.{q}'),
        (r'backbone\.conv5\.conv\.weight', 'cls_head.conv5.weight'),
        (r'backbone\.conv5\.bn\.' + _BN, 'cls_head.bn5.{p}'),
        (r'cls_head\.fc1\.weight', 'cls_head.fc1.weight'),
        (r'cls_head\.fc2\.(?P<q>weight|bias)', 'cls_head.fc_cls.{q}'),
    ])

TABLES = dict(
    slowfast=SLOWFAST_TABLE,
    pytorchvideo=PYTORCHVIDEO_TABLE,
    mmaction2=MMACTION2_TABLE)
_CONV_INDEX = dict(a='1', b='2', c='3')


class ConversionError(ValueError):
    """A source checkpoint that cannot be converted exactly."""


def extract_state_dict(checkpoint) -> Dict[str, Tensor]:
    """The state dict inside a loaded checkpoint of any supported format."""
    if isinstance(checkpoint, dict):
        for key in ('model_state', 'state_dict', 'model'):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                return checkpoint[key]
        if all(isinstance(v, Tensor) for v in checkpoint.values()):
            return checkpoint
    raise ConversionError(
        'no state dict found: expected a dict of tensors or a dict with '
        "'model_state' (PySlowFast) or 'state_dict' (MMEngine)")


def map_keys(state: Dict[str, Tensor],
             source: str) -> Tuple[Dict[str, Tensor], List[str]]:
    """Rename the keys of ``state`` by ``source``'s table.

    Returns:
        The renamed state dict and the source keys no row matched.
    """
    if source not in TABLES:
        raise ConversionError(f'unknown source format {source!r}; choose one '
                              f'of {sorted(TABLES)}')
    table = TABLES[source]
    rows = [(re.compile(p), t) for p, t in table['rows']]
    out, unmapped = {}, []
    for key, value in state.items():
        for pattern, target in rows:
            match = pattern.fullmatch(key)
            if match is None:
                continue
            fields = match.groupdict()
            if 'stage' in fields:
                fields['layer'] = int(fields['stage']) + table['offset']
            if 'conv' in fields:
                fields['n'] = _CONV_INDEX[fields['conv']]
            new_key = target.format(**fields)
            if new_key in out:
                raise ConversionError(f'two source keys map to {new_key}')
            out[new_key] = value
            break
        else:
            unmapped.append(key)
    return out, unmapped


def infer_arch(state: Dict[str, Tensor]) -> str:
    """The variant name (``'m'`` for the shared XS/S/M network) whose
    structure the converted ``state`` has."""
    blocks = []
    for layer in range(1, 5):
        indices = {
            int(k.split('.')[2])
            for k in state if k.startswith(f'backbone.layer{layer}.')
        }
        blocks.append(len(indices))
    try:
        widths = tuple(state[f'backbone.layer{i}.0.conv3.weight'].shape[0]
                       for i in range(1, 5))
        inner = tuple(state[f'backbone.layer{i}.0.conv1.weight'].shape[0]
                      for i in range(1, 5))
    except KeyError as err:
        raise ConversionError(f'not an X3D checkpoint: {err} missing') from err
    for arch in ('m', 'l', 'xl'):
        _, w, b, n = x3d_structure(X3D.arch_settings[arch])
        if (w, b, n) == (widths, inner, tuple(blocks)):
            return arch
    raise ConversionError(
        f'no X3D variant has stage widths {widths}, inner widths {inner} and '
        f'blocks {tuple(blocks)}')


def _add_identity_shortcut_bn(state: Dict[str, Tensor], eps: float) -> List[str]:
    """Give a BN-less shortcut conv an identity BN; return the BN keys made."""
    made = []
    for key in list(state):
        match = re.fullmatch(r'(backbone\.layer\d\.\d+\.downsample)\.0\.weight',
                             key)
        if match is None or f'{match[1]}.1.weight' in state:
            continue
        channels = state[key].shape[0]
        prefix = f'{match[1]}.1.'
        state[prefix + 'weight'] = torch.ones(channels)
        state[prefix + 'bias'] = torch.zeros(channels)
        state[prefix + 'running_mean'] = torch.zeros(channels)
        state[prefix + 'running_var'] = torch.full((channels, ), 1.0 - eps)
        state[prefix + 'num_batches_tracked'] = torch.tensor(0)
        made.append(match[1])
    return made


def convert_state_dict(state: Dict[str, Tensor],
                       source: str,
                       drop_classifier: bool = False,
                       num_classes: Optional[int] = None) -> Dict:
    """Convert an X3D state dict of ``source`` format to plugin keys.

    Args:
        state (dict): The source state dict.
        source (str): ``'slowfast'``, ``'pytorchvideo'`` or ``'mmaction2'``.
        drop_classifier (bool): Leave out the classifier (``fc_cls``) to
            fine-tune on another label set.
        num_classes (int, optional): The class count the target config
            expects; a different count in the file is an error unless
            ``drop_classifier``.

    Returns:
        dict: ``state_dict`` (recognizer-level keys ``backbone.*`` and
        ``cls_head.*``), ``arch``, ``num_classes`` (of the file),
        ``mapped`` (count), ``notes`` (what was done beyond renaming).

    Raises:
        ConversionError: for unmapped source keys, missing or misshapen
            target keys, or a class count that differs from ``num_classes``.
    """
    converted, unmapped = map_keys(state, source)
    if unmapped:
        shown = ', '.join(unmapped[:8])
        raise ConversionError(
            f'{len(unmapped)} keys of the {source} checkpoint have no mapping '
            f'(is it really a {source} X3D?): {shown}')
    notes = []
    if 'cls_head.fc1.weight' in converted:
        fc1 = converted['cls_head.fc1.weight']
        converted['cls_head.fc1.weight'] = fc1.reshape(fc1.shape[0], -1)
    if source == 'pytorchvideo':
        made = _add_identity_shortcut_bn(converted, eps=1e-5)
        if made:
            notes.append('identity BN added to the BN-less shortcut of ' +
                         ', '.join(made))
    arch = infer_arch(converted)
    file_classes = converted['cls_head.fc_cls.weight'].shape[0] \
        if 'cls_head.fc_cls.weight' in converted else None
    if drop_classifier:
        for key in ('cls_head.fc_cls.weight', 'cls_head.fc_cls.bias'):
            converted.pop(key, None)
        notes.append('classifier dropped (fc_cls)')
    elif num_classes is not None and file_classes != num_classes:
        raise ConversionError(
            f'the checkpoint has {file_classes} classes, the config '
            f'{num_classes}; pass --drop-classifier to fine-tune a new '
            'classifier, or use a config with the same class count')
    _check_complete(converted, arch, file_classes, drop_classifier)
    return dict(
        state_dict=converted,
        arch=arch,
        num_classes=file_classes,
        mapped=len(state),
        notes=notes)


def _check_complete(state, arch, num_classes, drop_classifier):
    from x3d_plugin.models.heads import X3DHead
    from x3d_plugin.utils.state_dict import describe_mismatch
    backbone = X3D(arch=arch)
    head = X3DHead(
        num_classes=num_classes or 1,
        in_channels=backbone.stage_widths[-1],
        mid_channels=backbone.inner_widths[-1])
    model = torch.nn.Module()
    model.backbone, model.cls_head = backbone, head
    expected = dict(model.state_dict())
    if drop_classifier:
        for key in ('cls_head.fc_cls.weight', 'cls_head.fc_cls.bias'):
            expected.pop(key)

    problems = describe_mismatch(expected, state)
    if problems:
        raise ConversionError(
            f'the converted checkpoint does not fit X3D arch={arch!r}:\n'
            f'{problems}')
