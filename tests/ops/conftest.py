"""The ``fast`` fixture of the CPU kernel tests: the C++ extension built
(a failed build fails the test, not skips it: CI must exercise the build),
unless ``X3D_PLUGIN_NO_EXT`` is set, with the channelwise and the BN fast
paths switched on before and after the test."""
import os

import pytest

from x3d_plugin.ops import (extension_error, fast_channelwise_available,
                            set_fast_channelwise)
from x3d_plugin.ops.batch_norm import set_fast_batch_norm

NO_EXT = os.environ.get('X3D_PLUGIN_NO_EXT', '') not in ('', '0')


@pytest.fixture
def fast():
    if NO_EXT:
        pytest.skip('X3D_PLUGIN_NO_EXT is set')
    assert fast_channelwise_available(), (
        f'the C++ extension did not build: {extension_error()}')
    set_fast_channelwise(True)
    set_fast_batch_norm(True)
    yield
    set_fast_channelwise(True)
    set_fast_batch_norm(True)
