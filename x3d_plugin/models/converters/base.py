"""The conversion machinery shared by every checkpoint format.

A :class:`CheckpointFormat` is a mapping table: rows ``(pattern, target)``
where ``pattern`` is matched against the whole source key and ``target`` is
a format string filled with the pattern's named groups. ``{layer}`` is the
plugin's 1-based stage index (the group ``stage`` plus the format's
``stage_offset``) and ``{n}`` the plugin's conv index of the group ``conv``
(``a``/``b``/``c`` -> 1/2/3). Every source key must match exactly one row and
every key of the plugin model must be produced, or the conversion fails.
A format with more to do than renaming overrides
:meth:`CheckpointFormat.postprocess`.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

from torch import Tensor

from ..checkpoint import CheckpointMismatchError, describe_mismatch
from ..variants import Structure, UnknownArchError, variant_of_structure

# The BN tensors, as a pattern group.
BN = r'(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)'
_CONV_INDEX = dict(a='1', b='2', c='3')
CLASSIFIER_KEYS = ('cls_head.fc_cls.weight', 'cls_head.fc_cls.bias')


class ConversionError(CheckpointMismatchError):
    """A source checkpoint that cannot be converted exactly."""


class CheckpointFormat:
    """One source layout of X3D checkpoints.

    Args:
        name (str): The name users give (``--from NAME``).
        rows (Sequence[tuple[str, str]]): ``(pattern, target)`` pairs.
        stage_offset (int): Added to the group ``stage`` to make ``layer``.
    """

    def __init__(self, name: str, rows: Sequence[Tuple[str, str]],
                 stage_offset: int = 0) -> None:
        self.name = name
        self.rows = [(re.compile(p), t) for p, t in rows]
        self.stage_offset = stage_offset

    def map_keys(
            self, state: Dict[str,
                              Tensor]) -> Tuple[Dict[str, Tensor], List[str]]:
        """Rename the keys of ``state`` by the table.

        Returns:
            The renamed state dict and the source keys no row matched.
        """
        out, unmapped = {}, []
        for key, value in state.items():
            for pattern, target in self.rows:
                match = pattern.fullmatch(key)
                if match is None:
                    continue
                fields = match.groupdict()
                if 'stage' in fields:
                    fields['layer'] = int(fields['stage']) + self.stage_offset
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

    def postprocess(self, state: Dict[str, Tensor]) -> List[str]:
        """Change the renamed ``state`` in place beyond renaming; return
        notes saying what was done."""
        return []


FORMATS: Dict[str, CheckpointFormat] = {}


def register_format(fmt: CheckpointFormat) -> CheckpointFormat:
    """Make ``fmt`` available by its name."""
    if fmt.name in FORMATS:
        raise ValueError(f'checkpoint format {fmt.name!r} exists already')
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> CheckpointFormat:
    """The format called ``name``."""
    if name not in FORMATS:
        raise ConversionError(f'unknown source format {name!r}; choose one '
                              f'of {sorted(FORMATS)}')
    return FORMATS[name]


def structure_of_state(state: Dict[str, Tensor]) -> Structure:
    """The widths and depths of the network of a converted ``state``."""
    try:
        return Structure(
            stem_width=state['backbone.stem.conv_xy.weight'].shape[0],
            stage_widths=tuple(
                state[f'backbone.layer{i}.0.conv3.weight'].shape[0]
                for i in range(1, 5)),
            inner_widths=tuple(
                state[f'backbone.layer{i}.0.conv1.weight'].shape[0]
                for i in range(1, 5)),
            stage_blocks=tuple(
                len({
                    k.split('.')[2]
                    for k in state if k.startswith(f'backbone.layer{i}.')
                }) for i in range(1, 5)))
    except KeyError as err:
        raise ConversionError(f'not an X3D checkpoint: {err} missing') from err


def infer_arch(state: Dict[str, Tensor]) -> str:
    """The variant name (``'m'`` for the shared XS/S/M network) whose
    structure the converted ``state`` has."""
    return _arch_of(structure_of_state(state))


def _arch_of(structure: Structure) -> str:
    try:
        return variant_of_structure(structure)
    except UnknownArchError as err:
        raise ConversionError(str(err)) from err


def convert_state_dict(state: Dict[str, Tensor],
                       source: str,
                       drop_classifier: bool = False,
                       num_classes: Optional[int] = None) -> Dict:
    """Convert an X3D state dict of ``source`` format to plugin keys.

    Args:
        state (dict): The source state dict.
        source (str): A registered format: ``'slowfast'``,
            ``'pytorchvideo'``, ``'mmaction2'``.
        drop_classifier (bool): Leave out the classifier (``fc_cls``) to
            fine-tune on another label set.
        num_classes (int, optional): The class count the target config
            expects; a different count in the file is an error unless
            ``drop_classifier``.

    Returns:
        dict: ``state_dict`` (recognizer-level keys ``backbone.*`` and
        ``cls_head.*``), ``arch``, ``structure``, ``num_classes`` (of the
        file), ``mapped`` (count), ``notes`` (what was done beyond
        renaming).

    Raises:
        ConversionError: for unmapped source keys, missing or misshapen
            target keys, or a class count that differs from ``num_classes``.
    """
    fmt = get_format(source)
    converted, unmapped = fmt.map_keys(state)
    if unmapped:
        shown = ', '.join(unmapped[:8])
        raise ConversionError(
            f'{len(unmapped)} keys of the {source} checkpoint have no mapping '
            f'(is it really a {source} X3D?): {shown}')
    if 'cls_head.fc1.weight' in converted:
        fc1 = converted['cls_head.fc1.weight']
        converted['cls_head.fc1.weight'] = fc1.reshape(fc1.shape[0], -1)
    notes = fmt.postprocess(converted)
    structure = structure_of_state(converted)
    arch = _arch_of(structure)
    file_classes = converted['cls_head.fc_cls.weight'].shape[0] \
        if 'cls_head.fc_cls.weight' in converted else None
    if drop_classifier:
        for key in CLASSIFIER_KEYS:
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
        structure=structure,
        num_classes=file_classes,
        mapped=len(state),
        notes=notes)


def _check_complete(state, arch, num_classes, drop_classifier):
    from ..recognizer import build_x3d_recognizer
    expected = dict(
        build_x3d_recognizer(arch, num_classes or 1).state_dict())
    if drop_classifier:
        for key in CLASSIFIER_KEYS:
            expected.pop(key)
    problems = describe_mismatch(expected, state)
    if problems:
        raise ConversionError(
            f'the converted checkpoint does not fit X3D arch={arch!r}:\n'
            f'{problems}')
