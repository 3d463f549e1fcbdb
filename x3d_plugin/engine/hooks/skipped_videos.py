"""Report the videos that training skipped because they could not be
decoded (see ``x3d_plugin.PyAVSparseDecode`` with ``on_error='skip'``)."""
import os
import os.path as osp

from mmengine.dist import get_rank
from mmengine.hooks import Hook

from x3d_plugin.datasets.transforms.loading import SKIP_LOG_ENV
from x3d_plugin.registry import HOOKS


@HOOKS.register_module()
class SkippedVideosHook(Hook):
    """Collect skipped videos in ``{work_dir}/skipped_videos_rank{r}.tsv``
    and log how many each epoch skipped, with the file's path.

    The data-loader workers append to the file named by an environment
    variable that this hook sets before training (workers inherit it).
    """

    priority = 'LOW'

    def before_train(self, runner) -> None:
        self.path = osp.join(runner.work_dir,
                             f'skipped_videos_rank{get_rank()}.tsv')
        os.environ[SKIP_LOG_ENV] = self.path
        self._seen = self._count()

    def _count(self) -> int:
        if not osp.isfile(self.path):
            return 0
        with open(self.path) as f:
            return sum(1 for _ in f)

    def after_train_epoch(self, runner) -> None:
        total = self._count()
        new, self._seen = total - self._seen, total
        if new:
            runner.logger.warning(
                f'epoch {runner.epoch}: {new} unreadable videos were skipped '
                f'and replaced by other samples; list in {self.path}')
        runner.message_hub.update_info('skipped_videos', total)

    def after_train(self, runner) -> None:
        os.environ.pop(SKIP_LOG_ENV, None)
