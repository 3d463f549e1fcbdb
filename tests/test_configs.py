"""Every config builds (config, model, pipelines) and carries the recipe's
numbers."""
import pytest
from mmaction.registry import MODELS, TRANSFORMS
from mmengine.config import Config

from conftest import ROOT
from x3d_plugin.models import VARIANTS
from x3d_plugin.models.complexity import count_parameters
from x3d_plugin.models.variants import resolve_factors, x3d_structure

# epochs, lr, reference batch, per-GPU batch, params (PySlowFast
# configs/Kinetics/X3D_*.yaml); the clip, crop and jitter come from the
# variant table.
RECIPE = {
    'xs': (300, 0.1, 128, 16, 3_794_322),
    's': (300, 0.1, 128, 16, 3_794_322),
    'm': (300, 0.1, 128, 16, 3_794_322),
    'l': (256, 0.05, 64, 8, 6_153_432),
    'xl': (256, 0.05, 64, 8, 11_095_904),
}
CONFIGS = sorted(p.name for p in (ROOT / 'configs').glob('*.py'))


def by_type(pipeline, type_name):
    steps = [s for s in pipeline if s['type'] == type_name]
    assert len(steps) == 1, type_name
    return steps[0]


@pytest.mark.parametrize('arch', sorted(RECIPE))
def test_kinetics_config_numbers(arch):
    epochs, lr, ref_batch, batch, params = RECIPE[arch]
    variant = VARIANTS[arch]
    frames, rate = variant.num_frames, variant.sampling_rate
    jitter, crop = variant.train_jitter, variant.train_crop
    test_size = variant.test_size
    cfg = Config.fromfile(str(ROOT / 'configs' / f'x3d_{arch}_k400.py'))
    assert cfg.custom_imports == dict(
        imports=['x3d_plugin'], allow_failed_imports=False)
    assert cfg.model.backbone.arch == arch
    train, val, test = (cfg.train_pipeline, cfg.val_pipeline,
                        cfg.test_pipeline)
    sampler = by_type(train, 'x3d_plugin.SlowFastSampleFrames')
    assert (sampler['clip_len'], sampler['frame_interval']) == (frames, rate)
    assert by_type(train, 'x3d_plugin.PyAVInitAtScale')[
        'short_side'] == jitter
    assert by_type(train, 'RandomCrop')['size'] == crop
    assert by_type(train, 'Flip')['flip_ratio'] == 0.5
    assert by_type(val, 'CenterCrop')['crop_size'] == crop
    assert by_type(val, 'x3d_plugin.SlowFastSampleFrames')['num_clips'] == 1
    test_sampler = by_type(test, 'x3d_plugin.SlowFastSampleFrames')
    assert (test_sampler['clip_len'], test_sampler['frame_interval'],
            test_sampler['num_clips']) == (frames, rate, 10)
    assert by_type(test, 'x3d_plugin.PyAVInitAtScale')[
        'short_side'] == test_size
    assert by_type(test, 'ThreeCrop')['crop_size'] == test_size
    assert cfg.model.cls_head.average_clips == 'prob'
    assert cfg.model.cls_head.dropout_ratio == 0.5
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.param_scheduler[0]['max_epochs'] == epochs
    assert cfg.param_scheduler[0]['warmup_epochs'] == 35
    # Warm-up starts at 0.01 at the reference batch.
    assert cfg.param_scheduler[0]['warmup_start_factor'] * lr == \
        pytest.approx(0.01)
    assert cfg.optim_wrapper.optimizer.lr == lr
    assert cfg.auto_scale_lr == dict(enable=True,
                                     base_batch_size=ref_batch)
    assert cfg.train_dataloader.batch_size * 8 == ref_batch
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 10
    assert cfg.default_hooks.checkpoint.save_best == 'acc/top1'
    precise = cfg.default_hooks.precise_bn
    assert precise.type == 'x3d_plugin.PreciseBNHook'
    assert precise.num_iters == 200
    assert cfg.runner_type == 'x3d_plugin.X3DRunner'
    assert cfg.train_dataloader.sampler.type == 'x3d_plugin.SeededSampler'
    model = MODELS.build(cfg.model)
    assert count_parameters(model) == params


@pytest.mark.parametrize('config', CONFIGS)
def test_every_config_builds(config):
    cfg = Config.fromfile(str(ROOT / 'configs' / config))
    model = MODELS.build(cfg.model)
    structure = x3d_structure(resolve_factors(cfg.model.backbone.arch))
    assert (model.backbone.stage_widths, model.backbone.inner_widths,
            model.backbone.stage_blocks) == (structure.stage_widths,
                                             structure.inner_widths,
                                             structure.stage_blocks)
    assert model.cls_head.conv5.in_channels == structure.head_in_channels
    assert model.cls_head.conv5.out_channels == structure.head_mid_channels
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for step in cfg[loader].dataset.pipeline:
            TRANSFORMS.build(step)


def test_metafile_parses_and_names_existing_configs():
    from modelindex.load_model_index import load
    index = load(str(ROOT / 'configs' / 'metafile.yml'))
    names = [m.name for m in index.models]
    assert names == [f'x3d_{a}_k400' for a in ('xs', 's', 'm', 'l', 'xl')]
    for model in index.models:
        assert (ROOT / model.config).is_file()
        arch = model.name.split('_')[1]
        assert model.metadata.parameters == RECIPE[arch][-1]
