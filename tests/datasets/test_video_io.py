"""x3d_plugin.datasets.video_io: the helpers every video reader and tool
shares."""
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from mmcv import rescale_size

from x3d_plugin.datasets.demo_data import write_video
from x3d_plugin.datasets.video_io import (MissingPackageError,
                                          VideoDecodeError, error_reason,
                                          first_video_stream,
                                          missing_package_error, probe_size,
                                          raise_if_environment_error,
                                          require, scaled_size)


@pytest.mark.parametrize('height, width, short_side', [
    (1080, 1920, 320), (1920, 1080, 256), (72, 96, 48), (240, 320, 182),
    (48, 64, 54), (101, 333, 160), (333, 101, 160)
])
def test_scaled_size_rounds_as_mmcv(height, width, short_side):
    out_h, out_w = scaled_size(height, width, short_side)
    assert min(out_h, out_w) == short_side
    # mmcv.rescale_size takes and returns (width, height).
    assert (out_w, out_h) == rescale_size((width, height), (np.inf,
                                                            short_side))


def test_error_reason_is_one_line():
    assert error_reason(ValueError('bad\nsecond line')) == 'ValueError: bad'
    assert error_reason(KeyError()) == 'KeyError:'
    assert error_reason(RuntimeError('x' * 500)) == 'RuntimeError: ' + (
        'x' * 186)
    assert error_reason(OSError('  \n')) == 'OSError:'


def test_require_names_the_install_command(monkeypatch):
    import av
    assert require('av') is av
    monkeypatch.setitem(sys.modules, 'av', None)
    with pytest.raises(MissingPackageError) as info:
        require('av')
    assert isinstance(info.value, ImportError) and info.value.name == 'av'
    assert "the package 'av' is needed" in str(info.value)
    assert str(info.value).endswith('Install it with `pip install av`.')
    monkeypatch.setitem(sys.modules, 'decord', None)
    with pytest.raises(MissingPackageError, match='`pip install decord`'):
        require('decord')


def test_missing_shared_library_is_a_missing_package(monkeypatch):
    """A compiled part that does not load (decord raises OSError from
    ctypes) is an error of the environment too."""
    import importlib

    def fail(name, *args, **kwargs):
        raise OSError('libdecord.so: cannot open shared object file')

    monkeypatch.setattr(importlib, 'import_module', fail)
    with pytest.raises(MissingPackageError,
                       match='libdecord.so.*`pip install decord`'):
        require('decord')


def test_only_import_errors_come_from_the_environment():
    raise_if_environment_error(VideoDecodeError('no video stream'))
    raise_if_environment_error(OSError('Invalid data found'))
    with pytest.raises(MissingPackageError, match='`pip install av`'):
        raise_if_environment_error(
            ModuleNotFoundError("No module named 'av'", name='av'))
    with pytest.raises(MissingPackageError,
                       match="'cv2'.*`pip install opencv-python`"):
        raise_if_environment_error(
            ImportError('libGL.so.1: cannot open', name='cv2.cv2'))
    with pytest.raises(MissingPackageError,
                       match=r'a package .* \(ImportError: cannot import '
                       r"name 'x'\); install it"):
        raise_if_environment_error(ImportError("cannot import name 'x'"))
    err = missing_package_error(ImportError('x', name='einops'))
    with pytest.raises(MissingPackageError) as info:
        raise_if_environment_error(err)
    assert info.value is err
    assert 'pip install einops' in str(err)


def test_first_video_stream_and_probe_size(tmp_path):
    import av
    video = tmp_path / 'clip.mp4'
    write_video(video, np.zeros((3, 40, 56, 3), np.uint8), fps=10)
    assert probe_size(str(video)) == (40, 56)
    with av.open(str(video)) as container:
        stream = first_video_stream(container)
        assert (stream.index, stream.width, stream.height) == (0, 56, 40)


@pytest.mark.parametrize('videos, message', [
    ([], 'no video stream'),
    ([SimpleNamespace(width=0, height=0)], 'video stream has no frame size'),
])
def test_first_video_stream_errors(videos, message):
    container = SimpleNamespace(streams=SimpleNamespace(video=videos))
    with pytest.raises(VideoDecodeError, match=message):
        first_video_stream(container)
