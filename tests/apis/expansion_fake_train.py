"""A stand-in for tools/train.py with ``tools/train.py``'s command line
(``CONFIG --work-dir DIR --resume [--seed S]``): no training, the known J
of expansion_synthetic for the candidate's point, after
``SYNTHETIC_SLEEP`` seconds. It logs what a test needs to check the
launcher: its pid (``trainer.pid``), each run in
``<search work dir>/evaluations.log``, and a validation record and a
checkpoint pointer where MMEngine's runner would write them."""
import argparse
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import expansion_synthetic  # noqa: E402


def point_of(config: str) -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    pipeline = cfg.train_dataloader.dataset.pipeline
    sampler = next(s for s in pipeline if 'clip_len' in s)
    crop = next(s for s in pipeline if s['type'] == 'RandomCrop')
    return dict(num_frames=sampler['clip_len'],
                sampling_rate=sampler['frame_interval'],
                crop_size=crop['size'], **cfg.model.backbone.arch)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--resume', action='store_true')
    parser.add_argument('--seed', type=int)
    args = parser.parse_args()
    work = args.work_dir
    with open(osp.join(work, 'trainer.pid'), 'w') as f:
        f.write(f'{os.getpid()}\n')
    with open(osp.join(work, '..', '..', 'evaluations.log'), 'a') as f:
        f.write(osp.basename(work) + '\n')
    J = expansion_synthetic.synthetic_j(point_of(args.config))
    time.sleep(float(os.environ.get('SYNTHETIC_SLEEP', '0')))
    folder = osp.join(work, time.strftime('%Y%m%d_%H%M%S'), 'vis_data')
    os.makedirs(folder, exist_ok=True)
    with open(osp.join(folder, 'scalars.json'), 'a') as f:
        f.write(json.dumps({'acc/top1': J, 'step': 1}) + '\n')
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work, 'epoch_1.pth'))


if __name__ == '__main__':
    main()
