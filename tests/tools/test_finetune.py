"""Fine-tuning on another label set: the UCF101/HMDB51/own-folder configs,
the list builders of tools/data (official split files, a folder of class
sub-folders), and a fine-tune from a converted PySlowFast checkpoint through
tools/train.py and tools/test.py on real clips."""
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from conftest import ROOT
from x3d_plugin.apis.config_check import check_config
from x3d_plugin.datasets.demo_data import CLASSES as DEMO_CLASSES
from x3d_plugin.datasets.demo_data import render_video, write_video

FINETUNE = ROOT / 'configs' / 'finetune'
UCF101 = FINETUNE / 'x3d_m_k400-pre_8xb16-16x5x1-30e_ucf101-split1.py'
HMDB51 = FINETUNE / 'x3d_m_k400-pre_8xb16-16x5x1-30e_hmdb51-split1.py'
MY_FOLDER = FINETUNE / 'x3d_m_k400-pre_8xb16-16x5x1-30e_my-folder.py'
SLOWFAST_CKPT = 'reference/slowfast_x3d_xs/x3d_xs_slowfast_random.pyth'
TINY = 'data/kinetics_tiny2'


def run(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    env.update(kwargs.pop('env', {}))
    return subprocess.run([str(a) for a in args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=900, **kwargs)


# --------------------------------------------------------------- configs


@pytest.mark.parametrize('path, num_classes, data', [
    (UCF101, 101, 'data/ucf101'),
    (HMDB51, 51, 'data/hmdb51'),
    (MY_FOLDER, 2, 'data/my_videos'),
])
def test_finetune_configs_build(path, num_classes, data):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports.imports == ['x3d_plugin']
    assert cfg.model.cls_head.num_classes == num_classes
    for loader in ('train', 'val', 'test'):
        dataset = cfg[f'{loader}_dataloader'].dataset
        assert dataset.num_classes == num_classes
        assert dataset.ann_file.startswith(data)
        assert dataset.data_prefix.video.startswith(data)
    assert cfg.load_from == 'checkpoints/x3d_m_k400_no-classifier.pth'
    model = MODELS.build(cfg.model)
    assert model.cls_head.fc_cls.out_features == num_classes
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    lr_of = {}
    for group in optim.optimizer.param_groups:
        for param in group['params']:
            lr_of[id(param)] = group['lr']
    backbone = {round(lr_of[id(p)], 9) for p in model.backbone.parameters()}
    head = {round(lr_of[id(p)], 9) for p in model.cls_head.parameters()}
    assert backbone == {0.001}
    assert head == {0.01}
    scheduler = cfg.param_scheduler[0]
    assert (scheduler.type, scheduler.max_epochs, scheduler.warmup_epochs) \
        == ('x3d_plugin.WarmupCosineLR', 30, 2)
    assert cfg.train_cfg.max_epochs == 30
    # Testing: 10 clips x 3 crops of X3D-M, softmax scores averaged.
    test = {s.type: s for s in cfg.test_dataloader.dataset.pipeline}
    assert test['x3d_plugin.SlowFastSampleFrames'].num_clips == 10
    assert test['ThreeCrop'].crop_size == 256
    assert cfg.model.cls_head.average_clips == 'prob'
    check_config(cfg, 'train', check_data=False)


def test_frozen_stages_freeze_the_stem_and_stages():
    cfg = Config.fromfile(UCF101)
    cfg.model.backbone.frozen_stages = 2
    model = MODELS.build(cfg.model)
    model.train()
    frozen = [m for m in (model.backbone.stem, model.backbone.layer1,
                          model.backbone.layer2)]
    for module in frozen:
        assert not any(p.requires_grad for p in module.parameters())
    assert all(p.requires_grad for p in model.backbone.layer3.parameters())


# ---------------------------------------------------------- split lists


def load_tool(name):
    import importlib.util
    path = ROOT / 'tools' / 'data' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split_tool(*args):
    """Run build_split_lists.py's main in this process; the error line
    (``error: ...``) or None."""
    try:
        load_tool('build_split_lists').main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code
    return None


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def ucf101_files(ann):
    # As the official files are: CRLF line ends, 1-based indices, no label
    # in the test list.
    write(ann / 'classInd.txt',
          '1 ApplyEyeMakeup\r\n2 Basketball\r\n3 YoYo\r\n')
    write(
        ann / 'trainlist01.txt',
        'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n'
        'Basketball/v_Basketball_g08_c02.avi 2\r\n'
        'YoYo/v_YoYo_g08_c01.avi 3\r\n'
        'YoYo/v_YoYo_g09_c01.avi 3\r\n')
    write(
        ann / 'testlist01.txt', 'ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi'
        '\r\nYoYo/v_YoYo_g01_c01.avi\r\n')


def test_ucf101_split_lists(tmp_path):
    ann = tmp_path / 'ucf101' / 'annotations'
    ucf101_files(ann)
    proc = run([
        sys.executable, 'tools/data/build_split_lists.py', 'ucf101', ann
    ])
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / 'ucf101'  # default: the parent of the annotations
    assert (out / 'ucf101_train_split_1_videos.txt').read_text() == (
        'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0\n'
        'Basketball/v_Basketball_g08_c02.avi 1\n'
        'YoYo/v_YoYo_g08_c01.avi 2\n'
        'YoYo/v_YoYo_g09_c01.avi 2\n')
    assert (out / 'ucf101_val_split_1_videos.txt').read_text() == (
        'ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 0\n'
        'YoYo/v_YoYo_g01_c01.avi 2\n')
    assert (out / 'label_map_ucf101.txt').read_text().split() == [
        'ApplyEyeMakeup', 'Basketball', 'YoYo']
    assert 'ucf101_train_split_1_videos.txt: 4 videos' in proc.stdout


def test_ucf101_missing_videos_left_out_and_listed(tmp_path, capsys):
    ann = tmp_path / 'annotations'
    ucf101_files(ann)
    videos = tmp_path / 'videos'
    for rel in ('YoYo/v_YoYo_g08_c01.avi', 'YoYo/v_YoYo_g01_c01.avi',
                'Basketball/v_Basketball_g08_c02.avi'):
        write(videos / rel, 'x')
    assert split_tool('ucf101', ann, '--videos', videos, '--out-dir',
                      tmp_path / 'out') is None
    out = tmp_path / 'out'
    assert (out / 'ucf101_train_split_1_videos.txt').read_text().split(
        '\n')[:2] == ['Basketball/v_Basketball_g08_c02.avi 1',
                      'YoYo/v_YoYo_g08_c01.avi 2']
    missing = out / 'ucf101_train_split_1_videos.txt.missing.txt'
    assert missing.read_text().split() == [
        'ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi',
        'YoYo/v_YoYo_g09_c01.avi']
    assert '2 videos, 2 not found' in capsys.readouterr().out


def test_ucf101_errors_name_the_file(tmp_path):
    ann = tmp_path / 'annotations'
    ucf101_files(ann)
    write(ann / 'trainlist01.txt', 'YoYo/v_YoYo_g08_c01.avi 2\n')
    error = split_tool('ucf101', ann)
    assert error.startswith('error: ')
    assert re.search(r'trainlist01.txt:1: index 2 disagrees with '
                     r"classInd.txt, where 'YoYo' is 3", error)
    error = split_tool('ucf101', tmp_path / 'nowhere')
    assert 'classInd.txt' in error and 'download_annotations.sh' in error
    write(ann / 'trainlist01.txt', 'v_YoYo_g08_c01.avi 3\n')
    assert 'is not in a class folder named in classInd.txt' in split_tool(
        'ucf101', ann)
    ucf101_files(ann)
    assert 'none of the 4 videos of ucf101_train_split_1_videos.txt' in \
        split_tool('ucf101', ann, '--videos', tmp_path)


def test_hmdb51_split_lists(tmp_path):
    ann = tmp_path / 'hmdb51' / 'annotations'
    # Marks: 1 training, 2 testing, 0 not in this split (trailing spaces as
    # in the official files); split 2 must not leak into split 1.
    write(ann / 'brush_hair_test_split1.txt',
          'a_brush_hair_0.avi 1 \nb_brush_hair_1.avi 2 \n'
          'c_brush_hair_2.avi 0 \n')
    write(ann / 'brush_hair_test_split2.txt', 'a_brush_hair_0.avi 2 \n')
    write(ann / 'cartwheel_test_split1.txt',
          'd_cartwheel_0.avi 2 \ne_cartwheel_1.avi 1 \n')
    write(ann / 'cartwheel_test_split2.txt', 'd_cartwheel_0.avi 1 \n')
    assert split_tool('hmdb51', ann, '--splits', 1, 2) is None
    out = tmp_path / 'hmdb51'
    assert (out / 'hmdb51_train_split_1_videos.txt').read_text() == (
        'brush_hair/a_brush_hair_0.avi 0\ncartwheel/e_cartwheel_1.avi 1\n')
    assert (out / 'hmdb51_val_split_1_videos.txt').read_text() == (
        'brush_hair/b_brush_hair_1.avi 0\ncartwheel/d_cartwheel_0.avi 1\n')
    assert (out / 'hmdb51_train_split_2_videos.txt').read_text() == (
        'cartwheel/d_cartwheel_0.avi 1\n')
    assert (out / 'label_map_hmdb51.txt').read_text() == (
        'brush_hair\ncartwheel\n')
    write(ann / 'cartwheel_test_split1.txt', 'd_cartwheel_0.avi 3\n')
    assert 'cartwheel_test_split1.txt:1: expected "<video> <0|1|2>"' in \
        split_tool('hmdb51', ann)
    assert 'no <class>_test_split3.txt files' in split_tool(
        'hmdb51', ann, '--splits', 3)


# --------------------------------------------------------- folder lists


def make_folder(root, counts):
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / name / f'{i:02d}.mp4').write_bytes(b'')
    return root


def test_folder_lists_split_by_seed_and_ratio(tmp_path):
    tool = load_tool('build_folder_lists')
    root = make_folder(tmp_path / 'videos', {'walk': 10, 'jump': 5,
                                             'run fast': 3})
    (root / 'walk' / 'notes.txt').write_text('not a video')
    (root / 'walk' / '.hidden.mp4').write_bytes(b'')
    (root / 'jump' / 'more').mkdir()
    (root / 'jump' / 'more' / 'deep.MKV').write_bytes(b'')
    (root / 'stray.mp4').write_bytes(b'')  # not in a class folder
    result = tool.build_lists(str(root), val_ratio=0.2, seed=3)
    assert result['classes'] == ['jump', 'run fast', 'walk']
    assert (root / 'label_map.txt').read_text() == 'jump\nrun fast\nwalk\n'
    train = (root / 'train_list_videos.txt').read_text().splitlines()
    val = (root / 'val_list_videos.txt').read_text().splitlines()
    # round(n * 0.2), at least 1: jump 6 videos -> 1, run fast 3 -> 1,
    # walk 10 -> 2.
    assert result['counts'] == {'train': 15, 'val': 4}
    assert len(train) == 15 and len(val) == 4
    assert sorted(line.rsplit(' ', 1)[1] for line in val) == [
        '0', '1', '2', '2']
    assert 'jump/more/deep.MKV 0' in train + val
    listed = {line.rsplit(' ', 1)[0] for line in train + val}
    assert len(listed) == 19
    assert not any('notes' in v or 'hidden' in v or 'stray' in v
                   for v in listed)
    # The same seed gives the same lists; another seed another split.
    again = tool.build_lists(str(root), str(tmp_path / 'again'), 0.2, seed=3)
    assert again['counts'] == result['counts']
    assert (tmp_path / 'again' / 'val_list_videos.txt').read_text() == \
        '\n'.join(val) + '\n'
    other = tool.build_lists(str(root), str(tmp_path / 'other'), 0.2, seed=4)
    assert (tmp_path / 'other' / 'val_list_videos.txt').read_text() != \
        '\n'.join(val) + '\n'
    assert other['counts'] == result['counts']
    # A test split too.
    three = tool.build_lists(str(root), str(tmp_path / 'three'), 0.2, 0.2, 3)
    assert three['counts'] == {'train': 11, 'val': 4, 'test': 4}


def test_folder_lists_clear_errors(tmp_path):
    tool = load_tool('build_folder_lists')
    folder = tmp_path / 'flat'
    folder.mkdir()
    (folder / 'a.mp4').write_bytes(b'')

    def error(*args, **kwargs):
        with pytest.raises(tool.FolderError) as info:
            tool.build_lists(*args, **kwargs)
        return str(info.value)

    assert 'has no sub-folders' in error(str(folder))
    assert 'is not a folder' in error(str(tmp_path / 'missing'))
    root = make_folder(tmp_path / 'v', {'a': 3, 'b': 0, 'c': 2})
    message = error(str(root))
    assert "1 class folder(s)" in message and "'b'" in message
    assert '--skip-empty' in message
    result = tool.build_lists(str(root), skip_empty=True)
    assert result['classes'] == ['a', 'c'] and result['skipped'] == ['b']
    assert 'no videos in the class folders' in error(
        str(make_folder(tmp_path / 'e', {'a': 0, 'b': 0})))
    assert 'at least two class' in error(
        str(make_folder(tmp_path / 'one', {'a': 4})))
    assert "class 'a' has 1 video(s)" in error(
        str(make_folder(tmp_path / 'few', {'a': 1, 'b': 3})))
    assert '--val-ratio must be in [0, 1)' in error(str(root), val_ratio=1.5)
    proc = run([sys.executable, 'tools/data/build_folder_lists.py', folder])
    assert proc.returncode == 1
    assert proc.stderr.startswith('error: ') and 'sub-folders' in proc.stderr


# ------------------------------------------- fine-tune on real clips


LOAD_CHECK_HOOK = '''
import json, os
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from x3d_plugin.registry import HOOKS


@HOOKS.register_module()
class RecordLoadedWeights(Hook):
    """Compares the model, as training starts (after load_from), with the
    pretrained file, tensor by tensor."""

    def __init__(self, checkpoint):
        self.checkpoint = checkpoint

    def before_train(self, runner):
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        source = torch.load(self.checkpoint, weights_only=True)['state_dict']
        report = dict(equal=[], differ=[], absent=[])
        for key, value in model.state_dict().items():
            if key not in source:
                report['absent'].append(key)
            elif torch.equal(value, source[key]):
                report['equal'].append(key)
            else:
                report['differ'].append(key)
        with open(os.path.join(runner.work_dir, 'loaded.json'), 'w') as f:
            json.dump(report, f)
'''


def tiny_config(path, data_root, heldout_root, heldout_list, checkpoint,
                clip, sizes, epochs, optimizer, warmup_epochs=1):
    """The template config with a clip, crops, views and schedule small
    enough for 2 CPU cores; ``clip`` is ``(frames, sampling rate,
    target_fps)``, ``sizes`` ``(short side range, crop)``."""
    (frames, rate, fps), (jitter, crop) = clip, sizes
    path.write_text(
        textwrap.dedent(f"""
        _base_ = [{str(MY_FOLDER)!r}]
        custom_imports = dict(imports=['x3d_plugin', 'record_loaded'],
                              allow_failed_imports=False)
        data_root = {str(data_root)!r}
        label_map = f'{{data_root}}/label_map.txt'
        load_from = {str(checkpoint)!r}
        sample = dict(type='x3d_plugin.SlowFastSampleFrames',
                      clip_len={frames}, frame_interval={rate},
                      target_fps={fps})
        train = [
            dict(type='x3d_plugin.PyAVInitAtScale', short_side={jitter}),
            sample,
            dict(type='x3d_plugin.PyAVSparseDecode'),
            dict(type='RandomCrop', size={crop}),
            dict(type='Flip', flip_ratio=0.5),
            dict(type='FormatShape', input_format='NCTHW'),
            dict(type='PackActionInputs')]
        def views(num_clips, crop):
            return [
                dict(type='x3d_plugin.PyAVInitAtScale',
                     short_side={crop}),
                dict(sample, num_clips=num_clips, test_mode=True),
                dict(type='x3d_plugin.PyAVSparseDecode'),
                crop,
                dict(type='FormatShape', input_format='NCTHW'),
                dict(type='PackActionInputs')]
        loader = dict(num_workers=2, persistent_workers=False)
        train_dataloader = dict(
            batch_size=8, **loader,
            dataset=dict(ann_file=f'{{data_root}}/train_list_videos.txt',
                         data_prefix=dict(video=data_root), pipeline=train))
        val_dataloader = dict(
            batch_size=8, **loader,
            dataset=dict(ann_file=f'{{data_root}}/val_list_videos.txt',
                         data_prefix=dict(video=data_root),
                         pipeline=views(1, dict(type='CenterCrop',
                                                crop_size={crop}))))
        # Held out: videos that are in no list of the folder; 2 clips x 3
        # crops averaged.
        test_dataloader = dict(
            batch_size=4, **loader,
            dataset=dict(ann_file={str(heldout_list)!r},
                         data_prefix=dict(video={str(heldout_root)!r}),
                         pipeline=views(2, dict(type='ThreeCrop',
                                                crop_size={crop}))))
        max_epochs = {epochs}
        train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
        optim_wrapper = dict(optimizer={optimizer!r})
        param_scheduler = [dict(
            type='x3d_plugin.WarmupCosineLR', max_epochs=max_epochs,
            warmup_epochs={warmup_epochs}, warmup_start_factor=0.1,
            by_epoch=True,
            convert_to_iter_based=True)]
        auto_scale_lr = dict(enable=False)
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval=max_epochs,
                                             max_keep_ckpts=1))
        custom_hooks = [
            dict(type='x3d_plugin.RecordLoadedWeights',
                 checkpoint=load_from),
            dict(type='x3d_plugin.PreciseBNHook', num_iters=5,
                 interval=max_epochs),
            dict(type='x3d_plugin.NonFiniteLossHook', max_skips=0)]
        env_cfg = dict(cudnn_benchmark=False)
        randomness = dict(seed=0)
        """))
    return path


def convert_without_classifier(shared_dir, tmp_path):
    """The PySlowFast checkpoint (X3D-XS = S = M network, random weights)
    converted with --drop-classifier."""
    checkpoint = tmp_path / 'x3d_m_k400_no-classifier.pth'
    proc = run([
        sys.executable, 'tools/convert_checkpoint.py',
        shared_dir / SLOWFAST_CKPT, checkpoint, '--from', 'slowfast',
        '--drop-classifier'
    ])
    assert proc.returncode == 0, proc.stderr
    state = torch.load(checkpoint, weights_only=True)['state_dict']
    assert not any(k.startswith('cls_head.fc_cls') for k in state)
    return checkpoint


def build_folder_lists(folder, classes, num_videos):
    proc = run([
        sys.executable, 'tools/data/build_folder_lists.py', folder,
        '--val-ratio', '0.2', '--seed', '0'
    ])
    assert proc.returncode == 0, proc.stderr
    assert (folder / 'label_map.txt').read_text().splitlines() == classes
    train = (folder / 'train_list_videos.txt').read_text().splitlines()
    val = (folder / 'val_list_videos.txt').read_text().splitlines()
    assert len(train) + len(val) == num_videos
    return train, val


def finetune_and_test(tmp_path, cfg_args, **cfg_kwargs):
    """Train through tools/train.py, check where every weight came from,
    test the last checkpoint on the held-out list with tools/test.py;
    the held-out results (one dict per video)."""
    (tmp_path / 'record_loaded.py').write_text(LOAD_CHECK_HOOK)
    cfg = tiny_config(tmp_path / 'cfg.py', *cfg_args, **cfg_kwargs)
    epochs = cfg_args[-2]
    work = tmp_path / 'work'
    env = dict(PYTHONPATH=f'{ROOT}{os.pathsep}{tmp_path}')
    proc = run([sys.executable, 'tools/train.py', cfg, '--work-dir', work],
               env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    # Every tensor of the backbone and of the head's pretrained layers came
    # from the file; only the new classifier did not.
    loaded = json.loads((work / 'loaded.json').read_text())
    model_keys = loaded['equal'] + loaded['differ'] + loaded['absent']
    backbone = [k for k in model_keys if k.startswith('backbone.')]
    assert len(backbone) > 500
    assert set(backbone) <= set(loaded['equal'])
    assert loaded['differ'] == []
    assert sorted(loaded['absent']) == ['cls_head.fc_cls.bias',
                                        'cls_head.fc_cls.weight']
    assert re.search(r'missing keys in source state_dict: '
                     r'cls_head\.fc_cls\.weight, cls_head\.fc_cls\.bias',
                     out), out[-4000:]
    # The backbone learnt at a tenth of the head's LR.
    last = work / f'epoch_{epochs}.pth'
    ckpt = torch.load(last, weights_only=False)
    head_lr = cfg_args[-1]['lr']
    lrs = {round(g['initial_lr'] / head_lr, 9)
           for g in ckpt['optimizer']['param_groups']}
    assert lrs == {0.1, 1.0}

    dump = tmp_path / 'scores.pkl'
    proc = run([
        sys.executable, 'tools/test.py', cfg, last, '--work-dir', work,
        '--dump', dump
    ], env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    with open(dump, 'rb') as f:
        results = pickle.load(f)
    metrics = json.loads(
        re.search(r'Test result: (\{.*\})', proc.stdout).group(1))
    correct = sum(
        int(torch.as_tensor(r['pred_score']).argmax()) == int(
            torch.as_tensor(r['gt_label']).reshape(-1)[0]) for r in results)
    assert metrics['acc/top1'] == pytest.approx(correct / len(results))
    for result in results:
        scores = torch.as_tensor(result['pred_score'])
        assert scores.shape == (2, )
        assert float(scores.sum()) == pytest.approx(1.0, abs=1e-5)
    print(f'held-out: top-1 {correct}/{len(results)}, mean class accuracy '
          f'{metrics["acc/mean1"]:.3f}')
    return results, metrics


@pytest.mark.slow
def test_finetune_real_clips_from_converted_slowfast_checkpoint(
        shared_dir, tmp_path):
    """The whole path on real Kinetics clips (2 classes): convert, list the
    folder, fine-tune through the template, test on held-out clips.

    The converted weights are random (no Kinetics weights can be fetched
    here), and from them X3D did not learn these classes in the 10
    iterations this test affords (held-out accuracy stayed at chance also
    after 30), so held-out accuracy is printed, not asserted; the test
    checks where every weight came from, the LR split and the multi-view
    scores. The next test checks the learning."""
    tiny = shared_dir / TINY
    classes = (tiny / 'label_map.txt').read_text().splitlines()
    assert classes == ['doing exercises', 'typing']
    checkpoint = convert_without_classifier(shared_dir, tmp_path)

    # A folder of class sub-folders: the training clips, as symlinks.
    folder = tmp_path / 'my_videos'
    for line in (tiny / 'train.txt').read_text().splitlines():
        rel, label = line.rsplit(' ', 1)
        target = folder / classes[int(label)] / os.path.basename(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(tiny / rel)
    build_folder_lists(folder, classes, 49)
    # Held out from the folder entirely: the dataset's val and test clips.
    heldout = tmp_path / 'heldout_list_videos.txt'
    heldout.write_text((tiny / 'val.txt').read_text() +
                       (tiny / 'test.txt').read_text())

    results, _ = finetune_and_test(tmp_path, (
        folder, tiny, heldout, checkpoint, (4, 12, 30), ((64, 80), 64), 2,
        dict(lr=0.01)))
    assert len(results) == 20


@pytest.mark.slow
def test_finetune_learns_held_out_motion_classes(shared_dir, tmp_path):
    """The template's recipe (backbone at a tenth of the head's LR, warm-up
    and cosine; AdamW instead of SGD, which moves random weights much
    sooner, as in configs/x3d_xs_demo.py) learns two classes of the
    synthetic motion videos -- moving up and moving down, which a
    horizontal flip keeps -- from the converted random weights: 240
    iterations, 4-5 minutes on 2 shared cores (held-out accuracy 0.85 and
    0.925 in two runs; chance 0.5)."""
    checkpoint = convert_without_classifier(shared_dir, tmp_path)
    classes = ['moving down', 'moving up']
    folder = tmp_path / 'my_videos'
    heldout_root = tmp_path / 'heldout'
    heldout_lines = []
    for label, name in enumerate(classes):
        demo_label = DEMO_CLASSES.index(name)
        for split, root, count in (('train', folder, 40),
                                   ('heldout', heldout_root, 20)):
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([7, split == 'train', label, i])
                path = root / name / f'{i:03d}.mp4'
                write_video(path, render_video(demo_label, rng, 16))
                if split == 'heldout':
                    heldout_lines.append(f'{name}/{path.name} {label}')
    build_folder_lists(folder, classes, 80)
    heldout = tmp_path / 'heldout_list_videos.txt'
    heldout.write_text('\n'.join(heldout_lines) + '\n')

    # 8 frames every 2nd of the 16-frame videos at their own rate, 48²
    # crops: the demo config's clip.
    results, metrics = finetune_and_test(
        tmp_path, (folder, heldout_root, heldout, checkpoint, (8, 2, None),
                   ((48, 56), 48), 30,
                   dict(_delete_=True, type='AdamW', lr=5e-3,
                        weight_decay=0.05)),
        warmup_epochs=2)
    assert len(results) == 40
    # Balanced held-out set (20 + 20): chance is 0.5; 0.7 is 28 of 40.
    assert metrics['acc/mean1'] >= 0.7
    assert metrics['acc/top1'] >= 0.7
