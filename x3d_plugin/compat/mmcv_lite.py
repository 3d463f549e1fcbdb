"""mmcv-lite has no compiled ops, and its ``mmcv.cnn`` warns on every import
that ``MultiScaleDeformableAttention`` (a compiled op no recognizer uses)
failed to import.

Detected: mmcv has no compiled extension ``mmcv._ext``.
Change: a warnings filter that ignores exactly that message (a
``UserWarning`` starting "Fail to import ``MultiScaleDeformableAttention``");
other warnings are shown as before.
"""
import importlib.util
import warnings

MESSAGE = 'Fail to import ``MultiScaleDeformableAttention``'


def needed() -> bool:
    try:
        return importlib.util.find_spec('mmcv._ext') is None
    except (ImportError, ValueError):
        return True


def apply() -> None:
    warnings.filterwarnings('ignore', message=MESSAGE, category=UserWarning)
