"""Report the videos that training skipped because they could not be
decoded (see ``x3d_plugin.PyAVSparseDecode`` with ``on_error='skip'``)."""
import os
import os.path as osp
from typing import Dict

from mmengine.dist import get_rank
from mmengine.hooks import Hook

from x3d_plugin.datasets.transforms.loading import SKIP_LOG_ENV
from x3d_plugin.registry import HOOKS


@HOOKS.register_module()
class SkippedVideosHook(Hook):
    """Collect skipped videos in ``{work_dir}/skipped_videos_rank{r}.tsv``
    and log, after each epoch, every video skipped for the first time with
    its reason (once per video for the whole run, however often it was
    drawn) and how many distinct videos have been skipped so far.

    The data-loader workers append a ``path<TAB>reason`` line to the file
    named by an environment variable that this hook sets before training
    (workers inherit it) each time they skip a video; a video drawn again
    (a later epoch, or as the replacement of another bad one) is skipped
    again, so the file can list it more than once.

    Args:
        max_listed (int): Videos named per epoch in the log; the rest are
            counted (all are in the file). Defaults to 50.
    """

    priority = 'LOW'

    def __init__(self, max_listed: int = 50) -> None:
        self.max_listed = max_listed

    def before_train(self, runner) -> None:
        self.path = osp.join(runner.work_dir,
                             f'skipped_videos_rank{get_rank()}.tsv')
        os.environ[SKIP_LOG_ENV] = self.path
        # Videos skipped before (a resumed run appends to the same file)
        # were reported then.
        self._reported = set(self.skipped())

    def skipped(self) -> Dict[str, str]:
        """Every video skipped so far and the reason it was first skipped
        for, in the order they were first skipped."""
        found: Dict[str, str] = {}
        if not osp.isfile(self.path):
            return found
        with open(self.path, encoding='utf-8', errors='replace') as f:
            for line in f:
                filename, _, reason = line.rstrip('\n').partition('\t')
                if filename:
                    found.setdefault(filename, reason)
        return found

    def after_train_epoch(self, runner) -> None:
        # runner.epoch counts finished epochs only after this hook.
        found = self.skipped()
        new = {f: r for f, r in found.items() if f not in self._reported}
        self._reported.update(new)
        if new:
            listed = [f'  {f} ({r})'
                      for f, r in list(new.items())[:self.max_listed]]
            if len(new) > self.max_listed:
                listed.append(f'  ... and {len(new) - self.max_listed} more')
            runner.logger.warning(
                f'epoch {runner.epoch + 1}: {len(new)} unreadable videos were '
                f'skipped for the first time and replaced by other samples '
                f'({len(found)} in all; every skip is in {self.path}):\n' +
                '\n'.join(listed))
        runner.message_hub.update_info('skipped_videos', len(found))

    def after_train(self, runner) -> None:
        os.environ.pop(SKIP_LOG_ENV, None)
