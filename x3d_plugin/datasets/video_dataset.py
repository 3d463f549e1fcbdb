"""A video dataset whose annotation list is checked before training, and
the unwrapping of data-loader workers' errors."""
import contextlib
import os.path as osp
import re
from typing import List

from mmaction.datasets import VideoDataset

from x3d_plugin.registry import DATASETS
from .annotations import (AnnotationError, annotation_entries, label_problem,
                          problems_error)
from .samplers import SampleKey, sample_randomness
from .video_io import VideoDecodeError

__all__ = [
    'AnnotationError', 'CheckedVideoDataset', 'worker_errors_unwrapped'
]


@DATASETS.register_module()
class CheckedVideoDataset(VideoDataset):
    """MMAction2's ``VideoDataset`` with an annotation list that is checked
    line by line when the dataset is built, i.e. before the first
    iteration: a missing list, a missing video, a label that is not an
    integer or not in ``0..num_classes-1`` is an error naming the list file
    and line (up to 10 listed), instead of a crash hours into an epoch.

    The list is read as UTF-8 whatever the locale, and written-by-hand
    forms are accepted: CRLF line ends, a byte order mark, trailing spaces,
    blank lines, names with spaces or non-ASCII letters (see
    :func:`x3d_plugin.datasets.annotations.read_annotation_list`).

    Args:
        num_classes (int): Classes of the label set; labels must be below.
        check_files (bool): Also check that every video exists. Defaults to
            True.
        **kwargs: As for ``VideoDataset`` (``ann_file``, ``pipeline``,
            ``data_prefix``...).

    Indexed with a :class:`~x3d_plugin.datasets.samplers.SampleKey` (what
    ``x3d_plugin.SeededSampler`` yields), it runs the pipeline with the
    random generators seeded from the key's seed, epoch and index.
    """

    accepts_sample_keys = True

    def __getitem__(self, idx):
        if isinstance(idx, SampleKey):
            with sample_randomness(idx):
                return super().__getitem__(idx.index)
        return super().__getitem__(idx)

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
                'tools/data/kinetics/build_file_list.py (see '
                'docs/training.md, "Kinetics-400 data"); for UCF101/HMDB51 '
                'or a folder of class sub-folders, '
                'tools/data/build_split_lists.py or '
                'build_folder_lists.py (configs/finetune/README.md); or '
                'point ann_file / data_prefix at your own data with '
                '--cfg-options.')
        data_list = []
        entries, problems = annotation_entries(self.ann_file, self.delimiter)
        prefix = self.data_prefix['video']
        for lineno, name, label in entries:
            where = f'{self.ann_file}:{lineno}'
            problem = label_problem(self.ann_file, lineno, label,
                                    self.num_classes)
            if problem:
                problems.append(problem)
                continue
            filename = osp.join(prefix, name) if prefix else name
            if self.check_files and not osp.isfile(filename):
                problems.append(f'{where}: video {filename!r} not found')
                continue
            data_list.append(dict(filename=filename, label=label))
        if problems:
            raise problems_error(self.ann_file, problems)
        if not data_list:
            raise AnnotationError(f'annotation list {self.ann_file!r} is '
                                  'empty')
        return data_list


@contextlib.contextmanager
def worker_errors_unwrapped():
    """Inside this block, a :class:`VideoDecodeError` or
    :class:`AnnotationError` raised in a data-loader worker reaches the
    caller with its own message.

    PyTorch re-raises a worker's error in the main process with the worker's
    whole traceback as the message ("Caught VideoDecodeError in DataLoader
    worker process 0. Original Traceback ..."); the error's own message,
    which names the file and the fix, is its last part.
    """
    try:
        yield
    except (VideoDecodeError, AnnotationError) as err:
        message = str(err)
        if 'in DataLoader worker process' not in message:
            raise
        name = type(err).__name__
        # The last "...Name: message" line starts the message (an earlier
        # one may be the error's cause, e.g. PyAV's).
        found = list(
            re.finditer(rf'^(?:[\w.]+\.)?{name}: ', message, re.MULTILINE))
        if not found:
            raise
        raise type(err)(message[found[-1].end():].strip()) from None
