"""check_config: every shipped config passes; each kind of mistake is named
by its config key with the fix, all at once; the tools stop on them before
the runner (no traceback, no work directory)."""
import copy
import importlib.util
import os

import pytest
from mmengine.config import Config

from conftest import ROOT
from x3d_plugin.apis.config_check import ConfigError, check_config
from x3d_plugin.datasets.demo_data import generate

CONFIGS = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py')
    if '_base_' not in p.parts)
# Configs trained on Kinetics-400: the dataset is the name's last part.
K400 = [c for c in CONFIGS if c.rsplit('_', 1)[-1].startswith('k400')]
DEMO = str(ROOT / 'configs' / 'x3d_xs_demo.py')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'x3d_cc_tool_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def problems_of(cfg, mode='train', check_data=False):
    """The problem lines of the ConfigError (none: [])."""
    try:
        check_config(cfg, mode, check_data)
    except ConfigError as err:
        lines = str(err).splitlines()
        return [line.strip() for line in lines[1:]] if len(lines) > 1 \
            or str(err).endswith('config:') else lines
    return []


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('cc_demo')
    generate(root, train_per_class=1, val_per_class=1, frames=8)
    return root


def demo_cfg(data_root=None):
    cfg = Config.fromfile(DEMO)
    if data_root is not None:
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader'):
            dataset = cfg[loader].dataset
            split = 'train' if loader.startswith('train') else 'val'
            dataset.ann_file = f'{data_root}/{split}_list_videos.txt'
            dataset.data_prefix = dict(video=str(data_root))
    return cfg


@pytest.mark.parametrize('mode', ['train', 'test'])
@pytest.mark.parametrize('config', CONFIGS)
def test_every_config_passes_without_data(config, mode):
    check_config(Config.fromfile(str(ROOT / config)), mode, check_data=False)


@pytest.mark.parametrize('config', K400)
def test_kinetics_configs_report_exactly_their_missing_data(
        config, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no data/kinetics400 here
    cfg = Config.fromfile(str(ROOT / config))
    train = problems_of(cfg, 'train', check_data=True)
    test = problems_of(cfg, 'test', check_data=True)
    for problems, loaders in ((train, ('train', 'val')), (test, ('test', ))):
        expected = []
        for loader in loaders:
            dataset = cfg[f'{loader}_dataloader'].dataset
            expected += [
                f'{loader}_dataloader.dataset.data_prefix.video: the folder '
                f'{dataset.data_prefix.video!r} does not exist; download '
                'the Kinetics-400 videos into it (docs/training.md, '
                '"Kinetics-400 data")',
                f'{loader}_dataloader.dataset.ann_file: the annotation list '
                f'{dataset.ann_file!r} does not exist; '
                'tools/data/kinetics/build_file_list.py builds it from the '
                'downloaded videos (docs/training.md, "Kinetics-400 data")'
            ]
        assert problems == expected


def test_demo_config_with_its_data_passes(demo_data):
    cfg = demo_cfg(demo_data)
    cfg.label_map = str(demo_data / 'label_map.txt')
    check_config(cfg, 'train')
    check_config(cfg, 'test')


def test_missing_demo_data_names_the_generator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    problems = problems_of(Config.fromfile(DEMO), 'test', check_data=True)
    assert problems == [
        "test_dataloader.dataset.data_prefix.video: the folder "
        "'data/x3d_demo' does not exist; python "
        'tools/data/generate_demo_dataset.py data/x3d_demo makes it',
        "test_dataloader.dataset.ann_file: the annotation list "
        "'data/x3d_demo/val_list_videos.txt' does not exist; python "
        'tools/data/generate_demo_dataset.py data/x3d_demo makes it'
    ]


def _set(cfg, key, value):
    """``cfg[key] = value`` for a dotted key with list indices."""
    *path, last = key.replace('[', '.').replace(']', '').split('.')
    node = cfg
    for part in path:
        node = node[int(part)] if part.isdigit() else node[part]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


TRAIN_PL = 'train_dataloader.dataset.pipeline'
TEST_PL = 'test_dataloader.dataset.pipeline'

# (edits, mode, the expected problem line)
BAD = {
    'unknown arch': ({
        'model.backbone.arch': 'q'
    }, 'train', 'model.backbone.arch: '),
    'crop larger than jitter':
    ({
        f'{TRAIN_PL}[3].size': 64
    }, 'train',
     f'{TRAIN_PL}[3].size is 64 but {TRAIN_PL}[0].short_side makes the '
     'short side as small as 48: a RandomCrop cannot be larger than the '
     f'frame; set {TRAIN_PL}[3].size to at most 48 or '
     f'{TRAIN_PL}[0].short_side to at least 64'),
    'crop larger than Resize -1':
    ({
        f'{TRAIN_PL}[3]': dict(type='Resize', scale=(-1, 40)),
        f'{TRAIN_PL}[4]': dict(type='RandomCrop', size=48)
    }, 'train',
     f'{TRAIN_PL}[4].size is 48 but {TRAIN_PL}[3].scale makes the short '
     'side as small as 40'),
    'crop larger than Resize keep_ratio=False':
    ({
        f'{TRAIN_PL}[3]': dict(type='Resize', scale=(64, 40),
                               keep_ratio=False),
        f'{TRAIN_PL}[4]': dict(type='CenterCrop', crop_size=48)
    }, 'train',
     f'{TRAIN_PL}[4].crop_size is 48 but {TRAIN_PL}[3].scale makes the '
     'short side as small as 40'),
    'crop larger than RandomRescale':
    ({
        f'{TRAIN_PL}[3]': dict(type='RandomRescale', scale_range=(40, 64)),
        f'{TRAIN_PL}[4]': dict(type='RandomCrop', size=48)
    }, 'train',
     f'{TRAIN_PL}[4].size is 48 but {TRAIN_PL}[3].scale_range makes the '
     'short side as small as 40'),
    'clip_len 0':
    ({
        f'{TRAIN_PL}[1].clip_len': 0
    }, 'train',
     f'{TRAIN_PL}[1].clip_len is 0; frames per clip must be a positive '
     'integer'),
    'frame_interval negative': (
        {
            f'{TRAIN_PL}[1].frame_interval': -2
        }, 'train',
        f'{TRAIN_PL}[1].frame_interval is -2; the sampling rate must be a '
        'positive integer'),
    'num_clips 0': (
        {
            f'{TEST_PL}[1].num_clips': 0
        }, 'test',
        f'{TEST_PL}[1].num_clips is 0; clips per video must be a positive '
        'integer'),
    'ThreeCrop smaller than short side': (
        {
            f'{TEST_PL}[3].crop_size': 40
        }, 'test',
        f'{TEST_PL}[3].crop_size is 40 but {TEST_PL}[0].short_side gives a '
        'short side of 48: ThreeCrop needs a crop as large as the short '
        f'side; set {TEST_PL}[3].crop_size to 48 (or the short side to 40)'),
    'dataset num_classes': (
        {
            'train_dataloader.dataset.num_classes': 10
        }, 'train', 'train_dataloader.dataset.num_classes is 10 but '
        'model.cls_head.num_classes is 8; set both to the number of '
        'classes of your labels'),
    'head in_channels': (
        {
            'model.cls_head.in_channels': 256
        }, 'train',
        "model.cls_head.in_channels is 256 but X3D arch 'xs' needs 192; "
        'set model.cls_head.in_channels=192'),
    'head mid_channels': (
        {
            'model.cls_head.mid_channels': 400
        }, 'train',
        "model.cls_head.mid_channels is 400 but X3D arch 'xs' needs 432; "
        'set model.cls_head.mid_channels=432'),
    'average_clips None': (
        {
            'model.cls_head.average_clips': None
        }, 'test',
        f'model.cls_head.average_clips is None but {TEST_PL} makes 6 views '
        '(clips x crops) of each video, whose scores would not be averaged '
        "into one per video; set model.cls_head.average_clips='prob' (or "
        "'score')"),
}


@pytest.mark.parametrize('kind', list(BAD))
def test_each_mistake_names_its_key_and_fix(kind):
    edits, mode, expected = BAD[kind]
    cfg = demo_cfg()
    for key, value in edits.items():
        _set(cfg, key, copy.deepcopy(value))
    problems = problems_of(cfg, mode)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems[0]
    # One problem: the message is that line alone.
    with pytest.raises(ConfigError) as info:
        check_config(cfg, mode, check_data=False)
    assert str(info.value) == problems[0]
    assert isinstance(info.value, ValueError)


def test_validation_is_not_checked_when_off():
    cfg = demo_cfg()
    cfg.val_dataloader.dataset.pipeline[1].clip_len = 0
    assert len(problems_of(cfg, 'train')) == 1
    cfg.val_cfg = None  # --no-validate
    assert problems_of(cfg, 'train') == []
    assert problems_of(cfg, 'test') == []  # testing builds no val loader


def test_labels_against_label_map_and_annotation_list(demo_data, tmp_path):
    cfg = demo_cfg(demo_data)
    ann = tmp_path / 'train.txt'
    ann.write_text((demo_data / 'train_list_videos.txt').read_text() +
                   'videos/train/train_0_0000.mp4 11\n')
    cfg.train_dataloader.dataset.ann_file = str(ann)
    label_map = tmp_path / 'labels.txt'
    label_map.write_text('\n'.join(f'class {i}' for i in range(7)) + '\n')
    cfg.label_map = str(label_map)
    problems = problems_of(cfg, 'train', check_data=True)
    assert problems == [
        f"label_map: label map {str(label_map)!r} has 7 class names but "
        'there are 8 classes; give one name per class, one a line; or set '
        'model.cls_head.num_classes to match',
        f'train_dataloader.dataset.ann_file: {ann}:9 has label 11 but '
        'model.cls_head.num_classes is 8 (labels 0..7); set num_classes to '
        'the number of classes (at least 12) or fix the list'
    ]


def test_all_problems_are_listed_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = demo_cfg()
    cfg.model.backbone.arch = 'q'
    cfg.train_dataloader.dataset.pipeline[3].size = 64
    cfg.train_dataloader.dataset.pipeline[1].clip_len = -1
    cfg.val_dataloader.dataset.num_classes = 3
    with pytest.raises(ConfigError) as info:
        check_config(cfg, 'train')
    lines = str(info.value).splitlines()
    # 4 mistakes + folder and list missing for each of train and val.
    assert lines[0] == '8 problems in the config:'
    keys = [line.strip().split(':')[0].split(' ')[0] for line in lines[1:]]
    assert keys == [
        'model.backbone.arch', f'{TRAIN_PL}[1].clip_len',
        f'{TRAIN_PL}[3].size', 'train_dataloader.dataset.data_prefix.video',
        'train_dataloader.dataset.ann_file',
        'val_dataloader.dataset.num_classes',
        'val_dataloader.dataset.data_prefix.video',
        'val_dataloader.dataset.ann_file'
    ]


def test_mode_must_be_known():
    with pytest.raises(ValueError, match="mode must be 'train' or 'test'"):
        check_config(demo_cfg(), 'val')


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_tools_stop_with_the_problems_before_the_runner(
        tool, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main = load_tool(tool).main
    work = tmp_path / 'work'
    args = [str(ROOT / 'configs' / 'x3d_m_k400.py'), '--work-dir', str(work)]
    if tool == 'test':
        (tmp_path / 'x.pth').write_bytes(b'')  # the config fails first
        args.insert(1, str(tmp_path / 'x.pth'))
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 1
    captured = capsys.readouterr()
    assert 'Traceback' not in captured.err
    lines = captured.err.strip().splitlines()
    count = 4 if tool == 'train' else 2
    assert lines[0] == f'error: {count} problems in the config:'
    assert len(lines) == count + 1
    assert all('does not exist' in line for line in lines[1:])
    assert not work.exists()
    assert not os.path.exists(tmp_path / 'work_dirs')
