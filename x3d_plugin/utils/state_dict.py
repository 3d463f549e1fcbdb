"""Strict, explained loading of state dicts into plugin modules."""
from typing import Mapping

from torch import Tensor, nn

_HINT = ('Convert official PySlowFast / PyTorchVideo / MMAction2 X3D weights '
         'with tools/convert_checkpoint.py, and check that the config\'s arch '
         'and num_classes match the checkpoint.')


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
        ValueError: naming ``source`` and every key that does not fit.
    """
    problems = describe_mismatch(module.state_dict(), state_dict)
    if problems:
        raise ValueError(f'{source!r} does not fit '
                         f'{type(module).__name__}:\n{problems}\n{_HINT}')
    module.load_state_dict(state_dict, strict=True)
