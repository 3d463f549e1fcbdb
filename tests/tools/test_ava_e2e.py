"""X3D on AVA end to end on mmcv-lite: MMAction2's AVA dataset, MMDetection's
FastRCNN with MMAction2's AVA head, the plugin's plain-PyTorch RoIAlign and
MMAction2's AVA evaluation, on a tiny generated dataset in AVA's formats."""
import copy
import math
import os
import pickle
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from conftest import ROOT
from x3d_plugin.apis.runner_args import build_runner
from x3d_plugin.compat import detection as compat_detection
from x3d_plugin.models.roi_extractors import RoIAlignExtractor3D

pytest.importorskip('mmdet', reason='the AVA detector needs mmdet 3.3.0')
# What the AVA config's custom_imports does
# (x3d_plugin.compat.mmdet_on_mmcv_lite).
compat_detection.enable()

CONFIG = str(ROOT / 'configs' / 'detection' /
             'x3d_m_k400-pre_8xb8-16x5x1-20e_ava-v2.2.py')

FPS = 30  # AVA's frame rate, as AVADataset assumes
T_START, T_END = 900, 905  # AVADataset's window of timestamps (seconds)
KEY_TIMES = (902, 903, 904)
FRAME_SIZE = (48, 64)  # height, width of the generated frames
# Three actions; a person's box is painted in its first action's colour.
ACTIONS = {1: 'stand', 2: 'sit', 3: 'talk to (e.g., self, a person)'}
COLOURS = {1: (40, 40, 220), 2: (40, 220, 40), 3: (220, 40, 40)}
LEFT, RIGHT = (0.05, 0.1, 0.45, 0.9), (0.55, 0.15, 0.95, 0.95)


def _people(video, time):
    """(box, actions) of each person at a key frame: the left person acts
    1 (and also 3 at odd seconds), the right one, where present, acts 2."""
    people = [(LEFT, (1, 3) if time % 2 else (1, ))]
    if video != 'vidB0000002' or time != 903:
        people.append((RIGHT, (2, )))
    return people


def make_tiny_ava(root):
    """Rawframes, annotation CSVs, exclusions, label map and proposals in
    the layout and formats of MMAction2's AVA configs."""
    rng = np.random.default_rng(0)
    height, width = FRAME_SIZE
    splits = {
        'train': ('vidA0000001', 'vidB0000002'),
        'val': ('vidC0000003', )
    }
    os.makedirs(os.path.join(root, 'annotations'))
    proposals = {}
    for split, videos in splits.items():
        rows = []
        for video in videos:
            folder = os.path.join(root, 'rawframes', video)
            os.makedirs(folder)
            frames = rng.integers(
                0, 60, ((T_END - T_START) * FPS, height, width, 3),
                dtype=np.uint8)
            for time in KEY_TIMES:
                centre = FPS * (time - T_START)
                people = _people(video, time)
                for person, (box, actions) in enumerate(people):
                    x1, x2 = int(box[0] * width), int(box[2] * width)
                    y1, y2 = int(box[1] * height), int(box[3] * height)
                    frames[centre - 12:centre + 12, y1:y2,
                           x1:x2] = COLOURS[actions[0]]
                    rows += [
                        f'{video},{time:04d},{box[0]:.3f},{box[1]:.3f},'
                        f'{box[2]:.3f},{box[3]:.3f},{action},{person}'
                        for action in actions
                    ]
                boxes = np.array([box for box, _ in people])
                jittered = np.clip(
                    boxes + rng.uniform(-0.02, 0.02, boxes.shape), 0, 1)
                scores = np.full((len(boxes), 1), 0.95)
                # One weak detection, dropped by the 0.9 score threshold.
                weak = np.array([[0.3, 0.3, 0.6, 0.7, 0.4]])
                proposals[f'{video},{time:04d}'] = np.concatenate(
                    [np.hstack([jittered, scores]), weak])
            for i, frame in enumerate(frames):
                cv2.imwrite(os.path.join(folder, f'img_{i + 1:05d}.jpg'),
                            frame)
        with open(os.path.join(root, 'annotations', f'{split}.csv'),
                  'w') as f:
            f.write('\n'.join(rows) + '\n')
    with open(os.path.join(root, 'annotations', 'train_excluded.csv'),
              'w') as f:
        f.write('vidB0000002,0904\n')
    with open(os.path.join(root, 'annotations', 'val_excluded.csv'),
              'w') as f:
        f.write('')
    with open(os.path.join(root, 'annotations', 'actions.pbtxt'), 'w') as f:
        for action, name in ACTIONS.items():
            f.write(f'item {{\n  name: "{name}"\n  id: {action}\n}}\n')
    with open(os.path.join(root, 'annotations', 'proposals.pkl'), 'wb') as f:
        pickle.dump(proposals, f)


@pytest.fixture(scope='module')
def tiny_ava(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('ava'))
    make_tiny_ava(root)
    return root


def _point_at(cfg, root):
    """The full config with the data swapped for the tiny set."""
    ann = os.path.join(root, 'annotations')
    for split, loader in (('train', cfg.train_dataloader),
                          ('val', cfg.val_dataloader)):
        loader.dataset.update(
            ann_file=os.path.join(ann, f'{split}.csv'),
            exclude_file=os.path.join(ann, f'{split}_excluded.csv'),
            label_file=os.path.join(ann, 'actions.pbtxt'),
            proposal_file=os.path.join(ann, 'proposals.pkl'),
            data_prefix=dict(img=os.path.join(root, 'rawframes')),
            timestamp_start=T_START,
            timestamp_end=T_END)
        loader.update(num_workers=0, persistent_workers=False)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator.update(
        ann_file=os.path.join(ann, 'val.csv'),
        exclude_file=os.path.join(ann, 'val_excluded.csv'),
        label_file=os.path.join(ann, 'actions.pbtxt'))
    cfg.test_evaluator = cfg.val_evaluator
    return cfg


def _small_clips(pipeline, clip_len, frame_interval, size):
    """The pipeline with shorter clips and smaller frames."""
    pipeline = copy.deepcopy(pipeline)
    for step in pipeline:
        if step['type'] == 'SampleAVAFrames':
            step.update(clip_len=clip_len, frame_interval=frame_interval)
        elif step['type'] == 'RandomRescale':
            step['scale_range'] = (size, size + 8)
        elif step['type'] == 'RandomCrop':
            step['size'] = size
        elif step['type'] == 'Resize':
            step['scale'] = (-1, size)
    return pipeline


def test_full_size_config_builds_and_runs(tiny_ava):
    """The AVA v2.2 config as shipped (X3D-M, 16x5 clips, 81 classes,
    last stage at stride 1): built, then one training loss and one
    prediction on real clips of the tiny set at a small frame size."""
    cfg = _point_at(Config.fromfile(CONFIG), tiny_ava)
    assert cfg.model.backbone.arch == 'm'
    assert cfg.train_pipeline[0]['clip_len'] == 16
    assert cfg.train_pipeline[0]['frame_interval'] == 5
    init_default_scope('mmaction')
    from mmaction.registry import DATASETS, MODELS
    model = MODELS.build(cfg.model)
    extractor = model.roi_head.bbox_roi_extractor
    assert isinstance(extractor, RoIAlignExtractor3D)
    assert model.roi_head.bbox_head.fc_cls.out_features == 81
    # Stride 1 in the last stage: 1/16 of the input, what the extractor
    # assumes (X3D-M at stride 2 everywhere gives 1/32).
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 16, 64, 96))
    assert feats.shape == (1, 192, 16, 64 // 16, 96 // 16)
    assert extractor.featmap_stride == 16

    # 48-pixel frames instead of 224/256 keep the 16x5 clip affordable.
    cfg.train_dataloader.dataset.pipeline = _small_clips(
        cfg.train_pipeline, 16, 5, 48)
    cfg.val_dataloader.dataset.pipeline = _small_clips(
        cfg.val_pipeline, 16, 5, 48)
    train_set = DATASETS.build(cfg.train_dataloader.dataset)
    val_set = DATASETS.build(cfg.val_dataloader.dataset)
    # 2 videos x 3 key frames, one excluded.
    assert len(train_set) == 5 and len(val_set) == 3
    batch = pseudo_collate([train_set[0], train_set[1]])
    assert batch['inputs'][0].shape == (3, 16, 48, 48)  # C x T x crop
    model.train()
    losses = model.train_step(
        batch, optim_wrapper=_NoStep())
    assert math.isfinite(float(losses['loss_action_cls'].detach()))

    model.eval()
    with torch.no_grad():
        sample = val_set[0]
        # The whole 4:3 frame at short side 48.
        assert sample['inputs'].shape == (3, 16, 48, 64)
        (pred, ) = model.test_step(pseudo_collate([sample]))
    # One prediction per kept proposal (the 0.4 one is dropped), each with
    # 81 sigmoid scores.
    boxes = pred.pred_instances.bboxes
    scores = pred.pred_instances.scores
    assert boxes.shape == (2, 4) and scores.shape == (2, 81)
    assert ((scores >= 0) & (scores <= 1)).all()


class _NoStep:
    """An optimizer wrapper that only runs backward (the test looks at the
    loss, not at an update)."""

    def optim_context(self, model):
        import contextlib
        return contextlib.nullcontext()

    def update_params(self, loss):
        loss.backward()


def test_train_and_evaluate(tiny_ava, tmp_path, monkeypatch):
    """A few training iterations through MMEngine's runner, then MMAction2's
    AVA evaluation (AVAMetric) to a finite frame mAP."""
    monkeypatch.chdir(tmp_path)  # AVAMetric writes its CSV here
    cfg = _point_at(Config.fromfile(CONFIG), tiny_ava)
    cfg.model.backbone.init_cfg = None  # no K400 weights here
    cfg.train_dataloader.dataset.pipeline = _small_clips(
        cfg.train_pipeline, 4, 2, 64)
    cfg.val_dataloader.dataset.pipeline = _small_clips(
        cfg.val_pipeline, 4, 2, 64)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_dataloader.batch_size = 2
    # 5 key frames in batches of 2: 3 iterations an epoch, 2 epochs, then
    # one evaluation on the validation video.
    cfg.train_cfg.update(max_epochs=2, val_interval=2)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0)]
    cfg.optim_wrapper.optimizer.lr = 0.01
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(tmp_path / 'work')
    cfg.launcher = 'none'
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 6
    overall = runner.message_hub.get_scalar('val/mAP/overall').current()
    assert math.isfinite(overall) and 0.0 <= overall <= 1.0
    # The config's checkpoint hook keeps the best frame mAP.
    assert os.path.isfile(
        os.path.join(cfg.work_dir, 'best_mAP_overall_epoch_2.pth'))


@pytest.mark.skipif(
    compat_detection.has_compiled_mmcv_ops(),
    reason='a full mmcv imports MMDetection without the placeholder')
def test_mmdet_detector_modules_on_mmcv_lite():
    """On mmcv-lite MMDetection and MMAction2's AVA modules import and
    register; a compiled op fails only when called, naming itself; MMEngine
    still sees mmcv-lite."""
    import mmcv.ops
    from mmdet.registry import MODELS, TASK_UTILS
    from mmengine.utils.dl_utils import mmcv_full_available
    compat_detection.enable()  # twice is once
    init_default_scope('mmaction')
    import mmaction.models  # noqa: F401
    for name in ('FastRCNN', 'AVARoIHead', 'BBoxHeadAVA'):
        assert MODELS.get(name) is not None, name
    assert TASK_UTILS.get('MaxIoUAssignerAVA') is not None
    assert not mmcv_full_available()
    with pytest.raises(compat_detection.MissingCompiledOpError,
                       match="'nms'.*mmcv-lite"):
        mmcv.ops.nms(torch.zeros(1, 4), torch.ones(1), 0.5)
    # It holds the functions mmcv.ops asks for, and nothing it invents.
    ext = sys.modules['mmcv._ext']
    assert hasattr(ext, 'roi_align_forward') and hasattr(ext, 'nms')
    assert not hasattr(ext, 'no_such_function')


@pytest.mark.skipif(
    compat_detection.has_compiled_mmcv_ops(),
    reason='a full mmcv imports MMDetection without the placeholder')
def test_import_alone_leaves_mmcv_ext_alone():
    """`import x3d_plugin` installs no placeholder: MMDetection fails to
    import on mmcv-lite as it does without the plugin, until the AVA
    config's custom_imports (or enable()) asks for it."""
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent("""
        import sys
        import x3d_plugin
        print('mmcv._ext' in sys.modules)
        try:
            import mmdet.models
        except ImportError:
            print('mmdet.models does not import')
        import x3d_plugin.compat.mmdet_on_mmcv_lite
        import mmdet.models
        print('mmdet.models imports')
    """)], capture_output=True, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split('\n')[:3] == [
        'False', 'mmdet.models does not import', 'mmdet.models imports']


def test_ava_metric_scores_ground_truth_perfectly(tiny_ava, tmp_path,
                                                  monkeypatch):
    """The generated annotations are what MMAction2's AVA evaluation reads:
    the ground truth, submitted as detections, scores mAP 1; its worker
    processes are gone when it returns (the plugin's AVAMetric)."""
    import multiprocessing

    from x3d_plugin.evaluation import AVAMetric
    monkeypatch.chdir(tmp_path)
    ann = os.path.join(tiny_ava, 'annotations')
    metric = AVAMetric(
        ann_file=os.path.join(ann, 'val.csv'),
        exclude_file=os.path.join(ann, 'val_excluded.csv'),
        label_file=os.path.join(ann, 'actions.pbtxt'))
    results = []
    for time in KEY_TIMES:
        people = _people('vidC0000003', time)
        scores = np.zeros((len(people), 81), dtype=np.float32)
        for i, (_, actions) in enumerate(people):
            scores[i, list(actions)] = 1.0
        results.append(
            dict(
                data_sample=None,
                pred=dict(
                    video_id='vidC0000003',
                    timestamp=time,
                    pred_instances=dict(
                        bboxes=torch.tensor([box for box, _ in people]),
                        scores=torch.from_numpy(scores)))))
    metric.process([], [r['pred'] for r in results])
    children = set(multiprocessing.active_children())
    metrics = metric.compute_metrics(metric.results)
    assert metrics['overall'] == pytest.approx(1.0)
    assert set(multiprocessing.active_children()) == children
