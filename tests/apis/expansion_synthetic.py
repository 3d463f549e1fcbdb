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
