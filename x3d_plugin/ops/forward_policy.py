"""Which forward of a channelwise conv3d runs on CPU: ours (the C++
kernel) or PyTorch's (oneDNN's channels-last ``F.conv3d``).

The backward is always ours (PyTorch's is the slow part); the forward is
whichever was faster when measured on a CPU of the same class (see
:func:`x3d_plugin.ops.cpu_extension.cpu_isa`: ``avx512_bf16``, ``avx512``,
``avx2``; ``generic`` uses the ``avx2`` entry). The choice is data: the
file ``forward_policy.json`` beside this module holds, per CPU class, the
machine and command it was measured with and per dtype (``float32``,
``bfloat16``) a list of rules; our forward runs where a rule matches::

    {"kernel": "3x3x3", "stride_hw": 1, "min_width": 6, "min_channels": 0}

``kernel`` is ``"KTxKHxKW"``, ``"Tx1x1"`` (any kt x 1 x 1 kernel, X3D's
stem) or ``"any"``; ``stride_hw`` (optional) the stride along H and W
(both equal); ``min_width`` and ``min_channels`` (optional, default 0)
bound the input's W and C from below. A class missing from the file uses
``avx2``'s entry; a dtype missing from an entry, PyTorch's forward.
float64 is not a speed dtype: its forward is ours for kt x 1 x 1 kernels
and PyTorch's elsewhere, on every CPU.

``tools/benchmark/measure_cw_policy.py`` measures this CPU's entry and
writes it (into the file above, or ``--output`` elsewhere). To use
another file set ``X3D_PLUGIN_CW_POLICY=/path/to/policy.json`` (its
classes replace the packaged ones) or call :func:`set_forward_policy`.
"""
import json
import os
import threading
from pathlib import Path
from typing import Optional, Union

import torch

from x3d_plugin.ops import cpu_extension

__all__ = [
    'POLICY_FILE', 'load_policy', 'set_forward_policy', 'policy_entry',
    'ours_forward_faster', 'rule_matches'
]

POLICY_FILE = Path(__file__).resolve().with_name('forward_policy.json')
_DTYPE_KEYS = {torch.float32: 'float32', torch.bfloat16: 'bfloat16'}
_FALLBACK = {'avx512_bf16': 'avx512', 'avx512': 'avx2', 'generic': 'avx2'}
_LOCK = threading.Lock()
# The classes in use: None = not read yet.
_POLICY = {'classes': None, 'source': None}


def _check(policy: dict, source: str) -> dict:
    """``policy['classes']`` after checking its form; raises ValueError
    naming ``source`` and the fault."""
    classes = policy.get('classes') if isinstance(policy, dict) else None
    if not isinstance(classes, dict):
        raise ValueError(f'{source}: a forward policy is a JSON object with '
                         '"classes": {class: entry}')
    for name, entry in classes.items():
        if name not in cpu_extension.ISA_CLASSES:
            raise ValueError(f'{source}: unknown CPU class {name!r}; use '
                             f'{", ".join(cpu_extension.ISA_CLASSES)}')
        rules = entry.get('rules') if isinstance(entry, dict) else None
        if not isinstance(rules, dict):
            raise ValueError(f'{source}: class {name!r} has no "rules": '
                             '{dtype: [rule, ...]}')
        for dtype, lst in rules.items():
            if dtype not in _DTYPE_KEYS.values() or not isinstance(lst,
                                                                   list):
                raise ValueError(
                    f'{source}: class {name!r}: rules are keyed by '
                    f'"float32" / "bfloat16" and are lists, got {dtype!r}')
            for rule in lst:
                if not isinstance(rule, dict) or 'kernel' not in rule:
                    raise ValueError(f'{source}: class {name!r} {dtype}: '
                                     f'rule {rule!r} has no "kernel"')
    return classes


def load_policy(path: Union[str, Path]) -> dict:
    """The classes of the policy file ``path`` (checked).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a forward policy.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f'forward policy file {path} does not exist; fix the path (or '
            'unset X3D_PLUGIN_CW_POLICY) or write one with '
            'tools/benchmark/measure_cw_policy.py --output')
    try:
        policy = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path}: not JSON ({exc})') from exc
    return _check(policy, str(path))


def _classes() -> dict:
    if _POLICY['classes'] is None:
        with _LOCK:
            if _POLICY['classes'] is None:
                classes = dict(load_policy(POLICY_FILE))
                source = str(POLICY_FILE)
                override = os.environ.get('X3D_PLUGIN_CW_POLICY', '')
                if override:
                    classes.update(load_policy(override))
                    source = f'{override} over {source}'
                _POLICY['source'] = source
                _POLICY['classes'] = classes
    return _POLICY['classes']


def set_forward_policy(policy: Union[None, str, Path, dict]) -> None:
    """Replaces the classes in use: a policy file's path, a dict of the
    file's form (``{"classes": {...}}``), or None to read the packaged file
    (and ``X3D_PLUGIN_CW_POLICY``) again. The classes given replace the
    packaged ones of the same name.

    Args:
        policy: The policy to use.
    """
    with _LOCK:
        _POLICY['classes'] = None
    if policy is None:
        return
    base = dict(load_policy(POLICY_FILE))
    if isinstance(policy, dict):
        base.update(_check(policy, 'set_forward_policy'))
        source = 'set_forward_policy'
    else:
        base.update(load_policy(policy))
        source = f'{policy} over {POLICY_FILE}'
    with _LOCK:
        _POLICY['classes'] = base
        _POLICY['source'] = source


def policy_entry(isa: Optional[str] = None) -> tuple:
    """``(class, entry)``: the entry used on CPU class ``isa`` (default:
    this CPU's best class, also when ``X3D_PLUGIN_CPU_ISA`` or
    :func:`~x3d_plugin.ops.cpu_extension.use_cpu_isa` picks another build,
    so that builds compare with the same forward), after the fallbacks."""
    classes = _classes()
    isa = isa or cpu_extension.cpu_isas()[0]
    name = isa
    while name not in classes and name in _FALLBACK:
        name = _FALLBACK[name]
    return name, classes.get(name, {'rules': {}})


def rule_matches(rule: dict, channels: int, width: int, kernel: tuple,
                 stride_hw: int) -> bool:
    """Whether ``rule`` covers a convolution of ``channels`` channels on
    frames ``width`` wide with ``kernel`` (kt, kh, kw) and H/W stride
    ``stride_hw``."""
    want = rule['kernel']
    if want == 'Tx1x1':
        if tuple(kernel[1:]) != (1, 1):
            return False
    elif want != 'any' and want != 'x'.join(map(str, kernel)):
        return False
    if rule.get('stride_hw') not in (None, stride_hw):
        return False
    return (width >= rule.get('min_width', 0)
            and channels >= rule.get('min_channels', 0))


def ours_forward_faster(x: torch.Tensor, weight: torch.Tensor,
                        stride) -> bool:
    """Whether our forward runs for input ``x`` (N, C, T, H, W), ``weight``
    (C, 1, kt, kh, kw) and ``stride``: float64 for kt x 1 x 1 kernels, else
    where a rule of this CPU class's entry for the dtype matches. Under CPU
    autocast a float32 input is looked up as bfloat16 (what the op
    computes in)."""
    kernel = tuple(weight.shape[2:])
    if x.dtype == torch.float64 or weight.dtype == torch.float64:
        return kernel[1:] == (1, 1)
    dtype = x.dtype
    if torch.is_autocast_enabled('cpu'):
        dtype = torch.bfloat16
    key = _DTYPE_KEYS.get(dtype)
    if key is None:
        return False
    stride_hw = int(stride[1]) if stride[1] == stride[2] else -1
    rules = policy_entry()[1]['rules'].get(key, [])
    return any(
        rule_matches(r, x.shape[1], x.shape[-1], kernel, stride_hw)
        for r in rules)
