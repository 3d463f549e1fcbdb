"""Checkpoint files into plugin models: find the state dict, load strictly.

Every load of weights in the package goes through here: the backbone's
``init_cfg=dict(type='Pretrained', ...)``, :func:`x3d_plugin.apis.
init_recognizer` and the converters. Files are read by MMEngine's
:func:`x3d_plugin.utils.checkpoint_file.load_checkpoint_file`: local files
weights-only after a check, so a missing, truncated or damaged file raises
an error naming it.
"""
from typing import Dict, Mapping

from torch import Tensor, nn

from x3d_plugin.utils.checkpoint_file import (CorruptCheckpointError,
                                              load_checkpoint_file)

__all__ = [
    'CheckpointMismatchError', 'CorruptCheckpointError',
    'describe_mismatch', 'extract_state_dict', 'load_checkpoint_strict',
    'load_state_dict_checked'
]

_HINT = ('Convert official PySlowFast / PyTorchVideo / MMAction2 X3D weights '
         'with tools/convert_checkpoint.py, and check that the config\'s arch '
         'and num_classes match the checkpoint.')


class CheckpointMismatchError(ValueError):
    """A checkpoint whose tensors do not fit the model exactly."""


def extract_state_dict(checkpoint) -> Dict[str, Tensor]:
    """The state dict inside a loaded checkpoint: PySlowFast's
    ``{'model_state': ...}``, MMEngine's ``{'state_dict': ...}``,
    ``{'model': ...}`` or a plain dict of tensors.

    Raises:
        CheckpointMismatchError: when none of these is found.
    """
    if isinstance(checkpoint, dict):
        for key in ('model_state', 'state_dict', 'model'):
            if isinstance(checkpoint.get(key), dict):
                return checkpoint[key]
        if all(isinstance(v, Tensor) for v in checkpoint.values()):
            return checkpoint
    raise CheckpointMismatchError(
        'no state dict found: expected a dict of tensors or a dict with '
        "'model_state' (PySlowFast) or 'state_dict' (MMEngine)")


def describe_mismatch(expected: Mapping[str, Tensor],
                      state_dict: Mapping[str, Tensor],
                      limit: int = 8) -> str:
    """A readable list of the keys and shapes of ``state_dict`` that do not
    fit the ``expected`` state dict; empty when they fit exactly."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f'{k}: file {tuple(state_dict[k].shape)} vs model '
        f'{tuple(expected[k].shape)}' for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    lines = []
    for title, items in (('missing from the file', missing),
                         ('not in the model', unexpected),
                         ('with other shapes', wrong_shape)):
        if items:
            shown = ', '.join(items[:limit])
            more = f' ... ({len(items) - limit} more)' if len(
                items) > limit else ''
            lines.append(f'  {len(items)} keys {title}: {shown}{more}')
    return '\n'.join(lines)


def load_state_dict_checked(module: nn.Module, state_dict: Mapping[str,
                                                                   Tensor],
                            source: str) -> None:
    """Load ``state_dict`` into ``module`` only if every key and shape fits.

    Raises:
        CheckpointMismatchError: naming ``source`` and every key that does
            not fit.
    """
    problems = describe_mismatch(module.state_dict(), state_dict)
    if problems:
        raise CheckpointMismatchError(
            f'{source!r} does not fit {type(module).__name__}:\n{problems}\n'
            f'{_HINT}')
    module.load_state_dict(state_dict, strict=True)


def load_checkpoint_strict(module: nn.Module,
                           filename: str,
                           prefix: str = '') -> None:
    """Load the checkpoint ``filename`` into ``module``, every tensor
    fitting exactly.

    Args:
        module (nn.Module): The model (or part of it).
        filename (str): A path or any URI MMEngine's loader takes.
        prefix (str): Load only the keys under this prefix (e.g.
            ``'backbone.'``), with the prefix removed.

    Raises:
        CheckpointMismatchError: for a file without the prefix or whose
            tensors do not fit.
        CorruptCheckpointError: for a truncated or damaged file.
    """
    state = extract_state_dict(
        load_checkpoint_file(filename, map_location='cpu'))
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state = {
            k[len(prefix):]: v
            for k, v in state.items() if k.startswith(prefix)
        }
        if not state:
            raise CheckpointMismatchError(
                f'{filename!r} has no key starting with {prefix!r}; check '
                'init_cfg.prefix')
    load_state_dict_checked(module, state, source=filename)
