"""MMDetection on mmcv-lite, for MMAction2's AVA detector.

MMAction2 builds its AVA detector from MMDetection (``FastRCNN``,
``StandardRoIHead``, ``MaxIoUAssigner``, ``RandomSampler``), and
``import mmdet.models`` imports ``mmcv.ops``, whose every module loads the
compiled extension ``mmcv._ext`` at import time. mmcv-lite has no such
extension, so the import fails, and MMAction2's ``roi_heads`` and
``task_modules`` packages swallow that ImportError and register nothing
(``AVARoIHead``, ``BBoxHeadAVA``, ``MaxIoUAssignerAVA`` are then unknown).

Nothing on the AVA path calls a compiled op when its RoI extractor is
:class:`~x3d_plugin.models.roi_extractors.RoIAlignExtractor3D` (plain
PyTorch): AVA uses precomputed proposals (no RPN, no NMS) and a per-class
sigmoid head. Only the import is in the way. :func:`enable`, called when
the plugin's ``x3d_plugin.MMDetDetector`` is built (configs/detection) or
by the user, and a no-op with a full mmcv or without MMDetection:

1. registers a placeholder module ``mmcv._ext`` holding exactly the
   functions that ``mmcv.ops`` asks ``mmcv._ext`` for (read from mmcv's
   sources), each raising :class:`MissingCompiledOpError` naming the op and
   the fix when called. It has no other attributes and no loader, so
   MMEngine's ``mmcv_full_available()`` still answers False;
2. completes what was imported before the placeholder existed:
   ``mmcv.cnn.bricks.transformer`` gets ``MultiScaleDeformableAttention``
   from ``mmcv.ops`` (MMDetection imports it from there), and MMAction2's
   ``roi_heads`` and ``task_modules`` are imported again so their modules
   register.

Separately, MMAction2's AVA evaluation (``ava_eval``, behind ``AVAMetric``)
forks ``multiprocessing.Pool(32)`` from the evaluating process and never
closes it; a child forked while another thread holds a lock can wait on it
forever. The plugin's ``x3d_plugin.AVAMetric`` runs ``ava_eval`` with
:class:`ClosingProcessPool` (:func:`closing_ava_pool`) for its own calls only.
"""
import ast
import contextlib
import glob
import importlib
import importlib.machinery
import importlib.util
import multiprocessing
import os
import sys
import types
import warnings

EXT_NAME = 'mmcv._ext'
# MMAction2 packages that register their detection modules only when
# ``mmdet.models`` imports.
MMACTION_DETECTION_PACKAGES = ('mmaction.models.roi_heads',
                               'mmaction.models.task_modules')
# A name each of them defines once its modules are registered.
_REGISTERED_MARKER = {
    'mmaction.models.roi_heads': 'AVARoIHead',
    'mmaction.models.task_modules': 'MaxIoUAssignerAVA',
}


class MissingCompiledOpError(RuntimeError):
    """A compiled mmcv op was called on mmcv-lite."""


def _missing_op(name: str):

    def op(*args, **kwargs):
        raise MissingCompiledOpError(
            f'mmcv.ops needs the compiled function {name!r}, which mmcv-lite '
            f'does not have. For RoIAlign in MMAction2 detectors use '
            f"bbox_roi_extractor=dict(type='x3d_plugin.RoIAlignExtractor3D',"
            f" _scope_='mmaction', ...) (plain PyTorch); for other compiled "
            f'ops install a full '
            f'mmcv instead of mmcv-lite (`pip uninstall mmcv-lite` then '
            f'`mim install "mmcv==2.1.0"`).')

    op.__name__ = name
    op.__qualname__ = name
    return op


class _PlaceholderExtension(types.ModuleType):
    """``mmcv._ext`` for mmcv-lite: the functions ``mmcv.ops`` imports, each
    a :class:`MissingCompiledOpError` when called."""


def mmcv_ops_extension_functions() -> list:
    """The names ``mmcv.ops`` asks ``mmcv._ext`` for
    (``ext_loader.load_ext('_ext', [...])`` in each of its modules)."""
    spec = importlib.util.find_spec('mmcv.ops')
    if spec is None or not spec.submodule_search_locations:
        return []
    names = set()
    for folder in spec.submodule_search_locations:
        for path in sorted(glob.glob(os.path.join(folder, '*.py'))):
            with open(path, encoding='utf-8') as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call)
                        and getattr(node.func, 'attr', None) == 'load_ext'
                        and len(node.args) == 2
                        and isinstance(node.args[1], (ast.List, ast.Tuple))):
                    names.update(
                        e.value for e in node.args[1].elts
                        if isinstance(e, ast.Constant)
                        and isinstance(e.value, str))
    return sorted(names)


def has_compiled_mmcv_ops() -> bool:
    """Whether the real ``mmcv._ext`` is installed (a full mmcv)."""
    module = sys.modules.get(EXT_NAME)
    if isinstance(module, _PlaceholderExtension):
        return False
    try:
        return importlib.util.find_spec(EXT_NAME) is not None
    except (ImportError, ValueError):
        return False


def _mmdet_installed() -> bool:
    try:
        return importlib.util.find_spec('mmdet') is not None
    except (ImportError, ValueError):
        return False


def _install_placeholder_extension() -> None:
    module = _PlaceholderExtension(EXT_NAME)
    for name in mmcv_ops_extension_functions():
        setattr(module, name, _missing_op(name))
    # No loader: pkgutil.find_loader('mmcv._ext') -- MMEngine's
    # mmcv_full_available() -- gives None.
    module.__spec__ = importlib.machinery.ModuleSpec(EXT_NAME, None)
    sys.modules[EXT_NAME] = module


def _complete_mmcv_transformer() -> None:
    transformer = sys.modules.get('mmcv.cnn.bricks.transformer')
    if transformer is None or hasattr(transformer,
                                      'MultiScaleDeformableAttention'):
        return
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention
    transformer.MultiScaleDeformableAttention = MultiScaleDeformableAttention


def _register_mmaction_detection_modules() -> None:
    for name in MMACTION_DETECTION_PACKAGES:
        package = sys.modules.get(name)
        if package is None:
            continue  # imported later, with the placeholder in place
        if not hasattr(package, _REGISTERED_MARKER[name]):
            importlib.reload(package)
        if not hasattr(package, _REGISTERED_MARKER[name]):
            # MMAction2 swallowed an ImportError again: say which.
            try:
                importlib.import_module('mmdet.models')
                reason = 'unknown'
            except ImportError as err:
                reason = f'{type(err).__name__}: {err}'
            warnings.warn(
                f'{name} registered none of its detection modules because '
                f'mmdet.models does not import ({reason}); AVA detectors '
                f'cannot be built until that is fixed (MMDetection 3.3.0 '
                f'imports pycocotools, shapely, six and terminaltables).')


class ClosingProcessPool:
    """``multiprocessing.Pool`` for ``ava_eval``: its ``map`` runs in
    worker processes started by the fork server (``'spawn'`` where there is
    none), never forked from the calling process, and stopped when the map
    returns.

    Args:
        processes (int, optional): Most workers to use. Defaults to the CPU
            count.
    """

    def __init__(self, processes=None):
        cpus = os.cpu_count() or 1
        self.processes = max(1, min(processes or cpus, cpus))

    def map(self, func, iterable, chunksize=None):
        method = ('forkserver' if 'forkserver'
                  in multiprocessing.get_all_start_methods() else 'spawn')
        context = multiprocessing.get_context(method)
        if method == 'forkserver':
            # Import the function's module once, in the server (takes
            # effect when the server starts).
            context.set_forkserver_preload([func.__module__])
        with context.Pool(self.processes) as pool:
            return pool.map(func, iterable, chunksize)


@contextlib.contextmanager
def closing_ava_pool():
    """Inside this block, MMAction2's ``ava_eval`` starts its process pool
    as :class:`ClosingProcessPool` (restored afterwards)."""
    from mmaction.evaluation.functional import ava_utils
    original = ava_utils.multiprocessing
    ava_utils.multiprocessing = types.SimpleNamespace(Pool=ClosingProcessPool)
    try:
        yield
    finally:
        ava_utils.multiprocessing = original


def enable() -> None:
    """Make ``mmdet.models`` (and so MMAction2's AVA detector) importable on
    mmcv-lite; nothing to do with a full mmcv or without MMDetection.
    Calling it again does nothing more."""
    if not _mmdet_installed() or has_compiled_mmcv_ops():
        return
    if not isinstance(sys.modules.get(EXT_NAME), _PlaceholderExtension):
        _install_placeholder_extension()
    _complete_mmcv_transformer()
    _register_mmaction_detection_modules()
