"""A video dataset whose annotation list is checked before training."""
import os.path as osp
from typing import List

from mmaction.datasets import VideoDataset

from x3d_plugin.registry import DATASETS


class AnnotationError(ValueError):
    """A bad annotation file or line."""


@DATASETS.register_module()
class CheckedVideoDataset(VideoDataset):
    """MMAction2's ``VideoDataset`` with an annotation list that is checked
    line by line when the dataset is built, i.e. before the first
    iteration: a missing list, a missing video, a label that is not an
    integer or not in ``0..num_classes-1`` is an error naming the list file
    and line (up to 10 listed), instead of a crash hours into an epoch.

    Args:
        num_classes (int): Classes of the label set; labels must be below.
        check_files (bool): Also check that every video exists. Defaults to
            True.
        **kwargs: As for ``VideoDataset`` (``ann_file``, ``pipeline``,
            ``data_prefix``...).
    """

    def __init__(self, *args, num_classes: int, check_files: bool = True,
                 **kwargs) -> None:
        self.check_files = check_files
        super().__init__(*args, num_classes=num_classes, **kwargs)

    def load_data_list(self) -> List[dict]:
        if not osp.isfile(self.ann_file):
            raise AnnotationError(
                f'annotation list {self.ann_file!r} does not exist. For '
                'Kinetics-400 put the videos in data/kinetics400/videos_train '
                'and videos_val and build the lists with '
                'tools/data/kinetics/build_file_list.py (see README.md, '
                '"Kinetics-400"); or point ann_file / data_prefix at your own '
                'data with --cfg-options.')
        data_list, problems = [], []
        prefix = self.data_prefix['video']
        with open(self.ann_file) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.strip().rsplit(self.delimiter, 1)
                where = f'{self.ann_file}:{lineno}'
                if len(parts) != 2:
                    problems.append(f'{where}: expected "path label", got '
                                    f'{line.strip()!r}')
                    continue
                name, label = parts
                try:
                    label = int(label)
                except ValueError:
                    problems.append(f'{where}: label {label!r} is not an '
                                    'integer')
                    continue
                if not 0 <= label < self.num_classes:
                    problems.append(f'{where}: label {label} is outside '
                                    f'0..{self.num_classes - 1}')
                    continue
                filename = osp.join(prefix, name) if prefix else name
                if self.check_files and not osp.isfile(filename):
                    problems.append(f'{where}: video {filename!r} not found')
                    continue
                data_list.append(dict(filename=filename, label=label))
        if problems:
            shown = '\n  '.join(problems[:10])
            more = f'\n  ... and {len(problems) - 10} more' if len(
                problems) > 10 else ''
            raise AnnotationError(
                f'{len(problems)} bad lines in {self.ann_file}:\n  '
                f'{shown}{more}')
        if not data_list:
            raise AnnotationError(f'annotation list {self.ann_file!r} is '
                                  'empty')
        return data_list
