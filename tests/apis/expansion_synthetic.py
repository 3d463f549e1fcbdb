"""A known J for the expansion search's tests: no training, a function of
the point. ``evaluate`` is named in a config as
``expansion.evaluate='expansion_synthetic:evaluate'`` (this folder on
PYTHONPATH)."""
import math
import os
import os.path as osp
import time

# J is highest at this point; its weights make the greedy path unique:
# from 1x8 32² w1: fast, fast (frames and rate), spatial, spatial, width.
OPTIMUM = dict(num_frames=4, sampling_rate=2, crop_size=64, width_factor=2.0,
               depth_factor=1.0, bottleneck_factor=1.0)
WEIGHTS = dict(num_frames=3.0, sampling_rate=0.5, crop_size=3.0,
               width_factor=1.0, depth_factor=1.5, bottleneck_factor=1.2)
EXPECTED_PATH = ['start', 'step1-fast', 'step2-fast', 'step3-spatial',
                 'step4-spatial', 'step5-width']


def synthetic_j(point: dict) -> float:
    distance = sum(w * abs(math.log(point[k] / OPTIMUM[k]))
                   for k, w in WEIGHTS.items())
    return 1.0 - distance / 10


def evaluate(point: dict, work_dir: str) -> dict:
    """Metrics of ``point``; each call is appended to
    ``<search work dir>/evaluations.log`` (to count repeats)."""
    with open(osp.join(work_dir, '..', '..', 'evaluations.log'), 'a') as f:
        f.write(osp.basename(work_dir) + '\n')
    time.sleep(float(os.environ.get('SYNTHETIC_SLEEP', '0')))
    return {'acc/top1': synthetic_j(point)}


def write_lists(folder, classes=8, per_class=10, test_per_class=2):
    """Training and test lists of made-up videos (``path label``): enough
    for the held-out split and the fingerprint, never decoded."""
    folder.mkdir(parents=True, exist_ok=True)
    train = [f'videos/train/{c}_{i}.mp4 {c}' for i in range(per_class)
             for c in range(classes)]
    test = [f'videos/val/{c}_{i}.mp4 {c}' for i in range(test_per_class)
            for c in range(classes)]
    (folder / 'train_list.txt').write_text('\n'.join(train) + '\n')
    (folder / 'test_list.txt').write_text('\n'.join(test) + '\n')
    return folder / 'train_list.txt', folder / 'test_list.txt'


def write_config(folder, base, **expansion):
    """A search config over ``base`` (the demo's) whose candidates are
    evaluated without training: ``evaluate`` (in the search's process) or
    ``train_script`` (a trainer process such as expansion_fake_train.py)
    given in ``expansion``. Its lists are :func:`write_lists`'s; the test
    list is also the config's validation list, as in the demo."""
    train, test = write_lists(folder / 'lists')
    config = folder / 'expand_synthetic.py'
    settings = dict(start=dict(num_frames=1, sampling_rate=8, crop_size=32,
                               width_factor=1.0, depth_factor=1.0,
                               bottleneck_factor=1.0),
                    max_clip_span=16, max_crop=64)
    settings.update(expansion)
    if 'train_script' not in settings:
        settings.setdefault('evaluate', 'expansion_synthetic:evaluate')
    body = ', '.join(f'{k}={v!r}' for k, v in settings.items())
    prefix = dict(video=str(folder / 'lists'))
    config.write_text(
        f"_base_ = ['{base}']\n"
        f"train_dataloader = dict(dataset=dict(ann_file='{train}', "
        f"data_prefix={prefix!r}))\n"
        f"val_dataloader = dict(dataset=dict(ann_file='{test}'))\n"
        f"test_dataloader = dict(dataset=dict(ann_file='{test}'))\n"
        f"expansion = dict({body})\n")
    return config
