"""MMAction2's ``AVAMetric`` with a process pool that cannot hang."""
from mmaction.evaluation.metrics import AVAMetric as _MMActionAVAMetric

from x3d_plugin.compat.detection import closing_ava_pool
from x3d_plugin.registry import METRICS


@METRICS.register_module()
class AVAMetric(_MMActionAVAMetric):
    """MMAction2's ``AVAMetric`` (same arguments) whose evaluation runs its
    worker processes through
    :class:`~x3d_plugin.compat.detection.ClosingProcessPool`.

    MMAction2's ``ava_eval`` forks ``multiprocessing.Pool(32)`` from the
    evaluating process and never closes it; that process runs torch threads,
    and a child forked while another thread holds a lock can wait on it
    forever. Here the workers come from multiprocessing's fork server (a
    fresh single-threaded interpreter), at most one per CPU, and are stopped
    when the evaluation returns. Other ``AVAMetric`` users are unaffected.
    """

    def compute_metrics(self, results: list) -> dict:
        with closing_ava_pool():
            return super().compute_metrics(results)
