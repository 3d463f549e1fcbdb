import sys
import types
from pathlib import Path

import pytest
import torch

import x3d_plugin  # noqa: F401  (applies the stack shims first)
from mmaction.utils import register_all_modules

register_all_modules(init_default_scope=True)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'


@pytest.fixture
def shared_dir():
    """The read-only shared/ folder beside the checkout (absent in a user's
    clone: tests that need it are skipped there)."""
    if not SHARED.is_dir():
        pytest.skip(f'{SHARED} is absent (it ships beside the development '
                    'checkout only)')
    return SHARED


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def import_pytorchvideo_x3d():
    """PyTorchVideo's ``create_x3d`` without torchvision (only its RoI head
    imports torchvision, which the X3D builder never uses). The stand-in
    for torchvision is removed once PyTorchVideo is imported: MMEngine's
    runner reads ``torchvision.__version__`` when torchvision imports."""
    stubbed = False
    if 'torchvision' not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except Exception:
            stub = types.ModuleType('torchvision')
            ops = types.ModuleType('torchvision.ops')
            ops.RoIAlign = type('RoIAlign', (), {})
            stub.ops = ops
            sys.modules['torchvision'] = stub
            sys.modules['torchvision.ops'] = ops
            stubbed = True
    try:
        module = pytest.importorskip('pytorchvideo.models.x3d')
    finally:
        if stubbed:
            sys.modules.pop('torchvision', None)
            sys.modules.pop('torchvision.ops', None)
    return module.create_x3d


@pytest.fixture
def fast():
    """The CPU kernels' C++ extension, built (a failed build fails the
    test, not skips it: CI must exercise the build) unless
    ``X3D_PLUGIN_NO_EXT`` is set, with the channelwise and the BN fast
    paths switched on before and after the test."""
    import os
    from x3d_plugin.ops import (extension_error, fast_channelwise_available,
                                set_fast_channelwise)
    from x3d_plugin.ops.batch_norm import set_fast_batch_norm
    if os.environ.get('X3D_PLUGIN_NO_EXT', '') not in ('', '0'):
        pytest.skip('X3D_PLUGIN_NO_EXT is set')
    assert fast_channelwise_available(), (
        f'the C++ extension did not build: {extension_error()}')
    set_fast_channelwise(True)
    set_fast_batch_norm(True)
    yield
    set_fast_channelwise(True)
    set_fast_batch_norm(True)
