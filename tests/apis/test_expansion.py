"""The expansion search (tools/expand.py): the axes and their steps, C(X)
against the complexity tool, backward contraction onto a target, the
criteria, a search with a known J (and killed halfway, and interrupted),
and a real search of one step on generated videos, locally and as Ray
tasks."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest
import torch

from conftest import ROOT
from x3d_plugin.apis.expansion import (AXES, Job, Limits, Point, Search,
                                       SearchState, Settings, complexity,
                                       contractions, expand, point_config,
                                       why_not, x2d)
from x3d_plugin.apis.expansion.configs import ExpansionConfigError
from x3d_plugin.apis.expansion.search import (SearchInterrupted,
                                              make_criterion)
from x3d_plugin.models import VARIANTS

sys.path.insert(0, str(ROOT / 'tests' / 'apis'))
import expansion_synthetic  # noqa: E402

DEMO = ROOT / 'configs' / 'expand' / 'x3d_expand_demo.py'


def changed(a: Point, b: Point):
    return {k for k, v in a.to_dict().items() if b.to_dict()[k] != v}


@pytest.mark.parametrize('axis', AXES)
def test_a_candidate_changes_one_axis_by_one_step(axis):
    start = Point(4, 6, 160, 2.0, 2.2, 2.25)
    grown = expand(start, axis)
    expected = {
        'fast': {'num_frames', 'sampling_rate'},
        'temporal': {'num_frames'},
        'spatial': {'crop_size'},
        'depth': {'depth_factor'},
        'width': {'width_factor'},
        'bottleneck': {'bottleneck_factor'},
    }[axis]
    assert changed(start, grown) == expected
    if axis == 'fast':  # twice the frames over the same span
        assert (grown.num_frames, grown.sampling_rate) == (8, 3)
        assert grown.clip_span == start.clip_span
    elif axis == 'temporal':  # twice the span at the same rate
        assert grown.clip_span == 2 * start.clip_span
    elif axis == 'spatial':
        assert grown.crop_size == 224  # 160 * sqrt(2) = 226 -> 224
    else:
        factor = {'depth': 2.2, 'width': 2.0, 'bottleneck': 2.25}[axis]
        key = f'{axis}_factor'
        assert getattr(grown, key) == pytest.approx(getattr(start, key) *
                                                    factor)
    ratio = complexity(grown, 400)[0] / complexity(start, 400)[0]
    # A step roughly doubles C(X) (paper section 3.2); twice the widths
    # quadruple the 1x1 convolutions.
    if axis == 'width':
        assert 3.0 < ratio < 4.0
    else:
        assert 1.6 < ratio < 2.3


def test_x2d_expanded_one_step_per_network_axis_is_x3d_m():
    """X3D-M's network is one X-Width, X-Depth and X-Bottleneck step from
    X2D; its input two X-Spatial steps from 112² (paper Tables 1 and 4)."""
    point = x2d(5)
    assert (point.num_frames, point.crop_size) == (1, 112)
    assert point.structure.stage_widths == (16, 24, 48, 96)  # rounded to 8
    for axis in ('width', 'depth', 'bottleneck', 'spatial', 'spatial'):
        point = expand(point, axis)
    assert point.crop_size == 224
    assert point.structure == VARIANTS['m'].structure
    assert point.structure.stage_blocks == (3, 5, 11, 7)
    assert point.structure.inner_widths == (54, 108, 216, 432)
    point = replace(point, num_frames=16)
    gflops, params = complexity(point, 400)
    assert round(gflops, 2) == VARIANTS['m'].paper_gflops  # 4.73
    assert round(params / 1e6, 2) == VARIANTS['m'].paper_params_m


def test_axes_that_cannot_grow_say_why():
    limits = Limits(max_clip_span=16, max_crop=64)
    assert 'sampling rate 1' in why_not(Point(4, 1, 32), 'fast', limits)
    assert why_not(Point(4, 2, 32), 'fast', limits) is None
    assert 'spans 32 frames' in why_not(Point(4, 4, 32), 'temporal', limits)
    assert why_not(Point(4, 2, 32), 'temporal', limits) is None
    assert 'max_crop 64' in why_not(Point(4, 2, 64), 'spatial', limits)
    assert why_not(Point(4, 2, 64), 'width', limits) is None
    with pytest.raises(ValueError, match='unknown expansion axis'):
        why_not(Point(4, 2, 64), 'colour', limits)
    with pytest.raises(ValueError, match='num_frames must be a positive'):
        Point(0, 2, 64)


def test_gflops_of_a_point_equal_the_complexity_tool(tmp_path):
    """C(X) is the count of tools/analysis/complexity.py on the
    candidate's own config at its training input."""
    from mmengine.config import Config
    sys.path.insert(0, str(ROOT / 'tools' / 'analysis'))
    import complexity as complexity_tool
    point = Point(6, 3, 56, 1.5, 1.4, 2.0)
    cfg = point_config(Config.fromfile(str(DEMO)), point,
                       jitter_ratio=(1.0, 7 / 6), test_ratio=1.0)
    cfg.dump(tmp_path / 'candidate.py')
    params, flops = complexity_tool.main([
        str(tmp_path / 'candidate.py'), '--shape', '6', '56', '56',
        '--no-mmengine'
    ])
    assert (flops / 1e9, params) == pytest.approx(complexity(point, 8))
    # The clip and the sizes went into every pipeline.
    train = cfg.train_dataloader.dataset.pipeline
    sampler = next(s for s in train if 'clip_len' in s)
    assert (sampler['clip_len'], sampler['frame_interval']) == (6, 3)
    assert next(s for s in train if s['type'] == 'RandomCrop')['size'] == 56
    assert train[0]['short_side'] == [56, 65]
    test = cfg.test_dataloader.dataset.pipeline
    assert next(s for s in test
                if s['type'] == 'ThreeCrop')['crop_size'] == 56
    assert cfg.model.cls_head.in_channels == point.structure.stage_widths[-1]
    assert 'expansion' not in cfg


def test_a_pipeline_the_tool_cannot_size_is_refused():
    from mmengine.config import Config
    cfg = Config.fromfile(str(DEMO))
    cfg.train_dataloader.dataset.pipeline.insert(
        3, dict(type='Resize', scale=(-1, 64)))
    with pytest.raises(ExpansionConfigError,
                       match=r'train_dataloader.dataset.pipeline\[3\] is '
                       'Resize'):
        point_config(cfg, Point(1, 8, 32))


def test_criteria():
    point = Point(1, 8, 32)
    metrics = {'acc/top1': 0.5}
    assert make_criterion('top1')(metrics, point, 2.0) == 50.0
    penalised = make_criterion(dict(type='top1_minus_gflops', weight=3.0))
    assert penalised(metrics, point, 2.0) == 44.0
    custom = make_criterion('expansion_synthetic:synthetic_j')
    assert custom is expansion_synthetic.synthetic_j
    with pytest.raises(ValueError, match='unknown criterion'):
        make_criterion('top5')


class Synthetic:
    """A launcher that evaluates the known J in this process."""
    name = 'synthetic'

    def __init__(self):
        self.calls = []

    def run(self, jobs, on_progress=None):
        for job in jobs:
            self.calls.append(job.cid)
            J = expansion_synthetic.synthetic_j(job.point)
            yield dict(cid=job.cid, metrics={'acc/top1': J}, wall_s=0.0)


def search(settings, tmp_path, launcher=None):
    launcher = launcher or Synthetic()

    def make_job(cid, point):
        return Job(cid, point.to_dict(), '', str(tmp_path / cid), '')

    return Search(settings, SearchState(str(tmp_path / 'state.json')),
                  make_job, launcher, lambda p: complexity(p, 8),
                  log=lambda m: None).run(), launcher


def test_search_with_a_known_j_follows_its_path(tmp_path):
    settings = Settings(start=Point(1, 8, 32), max_steps=5, num_classes=8,
                        limits=Limits(max_clip_span=16, max_crop=64))
    summary, launcher = search(settings, tmp_path)
    assert [r['cid'] for r in summary['path']
            ] == expansion_synthetic.EXPECTED_PATH
    assert Point.from_dict(summary['final']['point']) == Point(
        4, 2, 64, 2.0, 1.0, 1.0)
    # Every kept candidate has the highest J of its step.
    for step in summary['steps']:
        best = max(r['J'] for r in step['candidates'])
        kept = next(r for r in step['candidates']
                    if r['cid'] == step['chosen'])
        assert kept['J'] == best
    # Step 5 starts at crop 64 = max_crop: spatial is left out.
    assert [set(s['skipped']) for s in summary['steps']
            ] == [set(), set(), set(), set(), {'spatial'}]
    assert len(summary['steps'][4]['candidates']) == 5
    # Run again: nothing is evaluated twice.
    again, second = search(settings, tmp_path)
    assert second.calls == []
    assert again['final']['cid'] == summary['final']['cid']


def test_an_interrupted_candidate_is_not_recorded(tmp_path):
    """A candidate stopped by SIGTERM ends the search without a record;
    the next run trains it again (resuming its checkpoint)."""

    class Interrupted(Synthetic):

        def run(self, jobs, on_progress=None):
            for result in super().run(jobs):
                if result['cid'] == 'step1-spatial':
                    result = dict(cid=result['cid'], interrupted=True)
                yield result

    settings = Settings(start=Point(1, 8, 32), max_steps=2, num_classes=8,
                        limits=Limits(max_clip_span=16, max_crop=64))
    with pytest.raises(SearchInterrupted, match='step1-spatial unfinished'):
        search(settings, tmp_path, Interrupted())
    state = json.loads((tmp_path / 'state.json').read_text())['candidates']
    assert 'step1-spatial' not in state and 'step1-fast' in state
    summary, launcher = search(settings, tmp_path)
    assert launcher.calls[0] == 'step1-spatial'
    assert summary['path'][1]['cid'] == 'step1-fast'


@pytest.mark.parametrize('axis,start', [
    ('temporal', Point(16, 5, 224, 2.0, 2.2, 2.25)),
    ('fast', Point(16, 8, 224, 2.0, 2.2, 2.25)),
    ('spatial', Point(16, 5, 224, 2.0, 2.2, 2.25)),
    ('depth', Point(16, 5, 224, 2.0, 2.2, 2.25)),
    ('width', Point(16, 5, 224, 2.0, 2.2, 2.25)),
    ('bottleneck', Point(16, 5, 224, 2.0, 2.2, 2.25)),
])
@pytest.mark.parametrize('fraction', [0.25, 0.5, 0.8])
def test_contraction_lands_within_5_percent_of_the_target(
        tmp_path, axis, start, fraction):
    low = complexity(start, 8)[0]
    high = complexity(expand(start, axis), 8)[0]
    target = low * (high / low)**fraction
    # J is irrelevant with one axis: the one candidate is kept.
    summary, _ = search(Settings(start=start, axes=[axis],
                                 target_gflops=target, num_classes=8),
                        tmp_path)
    final = summary['final']
    assert final['cid'] == f'contract1-{axis}'
    assert Point.from_dict(final['point']) in contractions(start, axis)
    assert abs(final['gflops'] / target - 1) <= 0.05, (final, target)
    assert [r['cid'] for r in summary['path']] == ['start', final['cid']]


def write_synthetic_config(tmp_path, **expansion):
    return expansion_synthetic.write_config(tmp_path, DEMO, **expansion)


@pytest.mark.slow
def test_killed_search_continues_without_repeating_a_candidate(tmp_path):
    config = write_synthetic_config(tmp_path, steps=5)
    work = tmp_path / 'work'
    env = dict(os.environ, SYNTHETIC_SLEEP='0.4',
               PYTHONPATH=os.pathsep.join(
                   [str(ROOT / 'tests' / 'apis'),
                    os.environ.get('PYTHONPATH', '')]))
    command = [sys.executable, str(ROOT / 'tools' / 'expand.py'),
               str(config), '--work-dir', str(work), '--parallel', '1']
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    state = work / 'search_state.json'
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            try:
                done = len(json.loads(state.read_text())['candidates'])
            except (json.JSONDecodeError, KeyError):
                done = 0
            if done >= 9:
                break
        time.sleep(0.1)
    assert proc.poll() is None, 'the search ended before it was killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(json.loads(state.read_text())['candidates'])
    assert 9 <= killed_at < 20
    finished = subprocess.run(command, env=env, capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert 'not run again' in finished.stdout
    evaluated = (work / 'evaluations.log').read_text().split()
    # A candidate cut off by the kill is run again; a finished one never.
    repeats = {c for c in evaluated if evaluated.count(c) > 1}
    assert len(repeats) <= 1
    states = json.loads(state.read_text())['candidates']
    assert set(evaluated) == set(states)
    path = json.loads((work / 'path.json').read_text())
    assert [r['cid'] for r in path['path']
            ] == expansion_synthetic.EXPECTED_PATH
    final = (work / 'final_config.py').read_text()
    assert 'width_factor=2.0' in final and 'expansion =' not in final
    assert (work / 'expansion.png').stat().st_size > 10_000
    assert '**kept**' in (work / 'steps.md').read_text()


def write_real_config(tmp_path, data_root):
    config = tmp_path / 'expand_tiny.py'
    config.write_text(textwrap.dedent(f"""
        _base_ = [{str(DEMO)!r}]
        data_root = {str(data_root)!r}

        def _dataset(split):
            return dict(ann_file=f'{{data_root}}/{{split}}_list_videos.txt',
                        data_prefix=dict(video=data_root))

        train_dataloader = dict(batch_size=4, num_workers=0,
                                dataset=_dataset('train'))
        val_dataloader = dict(batch_size=4, num_workers=0,
                              dataset=_dataset('val'))
        test_dataloader = dict(batch_size=2, num_workers=0,
                               dataset=_dataset('val'))
        train_cfg = dict(max_epochs=1, val_interval=1)
        param_scheduler = [dict(type='x3d_plugin.WarmupCosineLR',
                                max_epochs=1, warmup_epochs=0.5,
                                by_epoch=True, convert_to_iter_based=True)]
        default_hooks = dict(checkpoint=dict(interval=1))
        expansion = dict(start=dict(num_frames=1, sampling_rate=8,
                                    crop_size=32, width_factor=1.0,
                                    depth_factor=1.0, bottleneck_factor=1.0))
    """))
    return config


def final_weights(work, cid):
    from x3d_plugin.models.checkpoint import extract_state_dict
    folder = work / 'candidates' / cid
    name = (folder / 'last_checkpoint').read_text().strip()
    return extract_state_dict(torch.load(name, map_location='cpu',
                                         weights_only=False))


@pytest.mark.slow
def test_real_search_of_one_step_locally_and_on_ray(tmp_path):
    """Two axes, one step, each candidate trained for an epoch on
    generated videos: the tool's outputs, a final config that trains, and
    the same J and weights when the candidates run as Ray tasks on a local
    Ray instance."""
    pytest.importorskip('ray')
    from x3d_plugin.datasets.demo_data import generate
    data = tmp_path / 'data'
    generate(data, train_per_class=4, val_per_class=2, frames=16)
    config = write_real_config(tmp_path, data)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    runs = {}
    for launcher in ('local', 'ray'):
        work = tmp_path / launcher
        command = [sys.executable, str(ROOT / 'tools' / 'expand.py'),
                   str(config), '--work-dir', str(work), '--steps', '1',
                   '--axes', 'temporal', 'spatial', '--launcher', launcher,
                   '--ray-address', 'local', '--threads-per-candidate', '1']
        done = subprocess.run(command, env=env, capture_output=True,
                              text=True, timeout=900, cwd=ROOT)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs[launcher] = (work, json.loads(
            (work / 'search_state.json').read_text())['candidates'])
    work, local = runs['local']
    assert set(local) == {'start', 'step1-temporal', 'step1-spatial'}
    for record in local.values():
        assert 0.0 <= record['J'] <= 100.0
        assert record['gflops'] == pytest.approx(complexity(
            Point.from_dict(record['point']), 8)[0])
    assert local['step1-temporal']['point']['num_frames'] == 2
    assert local['step1-spatial']['point']['crop_size'] == 48
    path = json.loads((work / 'path.json').read_text())
    assert path['path'][0]['cid'] == 'start'
    kept = path['final']['cid']
    assert local[kept]['J'] == max(local[c]['J'] for c in
                                   ('step1-temporal', 'step1-spatial'))
    assert 'kept' in (work / 'steps.md').read_text()
    assert (work / 'expansion.png').stat().st_size > 10_000
    # Ray: same seeds, same threads -> the same J and the same weights.
    ray_work, on_ray = runs['ray']
    assert {c: r['J'] for c, r in on_ray.items()} == {
        c: r['J'] for c, r in local.items()}
    for cid in local:
        a, b = final_weights(work, cid), final_weights(ray_work, cid)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    # The final config trains as it is (one epoch here).
    trained = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'train.py'),
         str(work / 'final_config.py'), '--work-dir', str(tmp_path / 'final'),
         '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1'],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert 'acc/top1' in trained.stdout + trained.stderr


def test_a_failed_candidate_is_recorded_and_left_out(tmp_path):
    """A candidate whose run fails (crash, NaN, unreadable data) is kept
    in the state with its error; the step goes on with the others, and a
    new run does not retry it unless asked."""

    class OneFails(Synthetic):

        def run(self, jobs, on_progress=None):
            for result in super().run(jobs):
                if result['cid'] == 'step1-fast':
                    result = dict(cid=result['cid'], wall_s=1.0,
                                  error='training exited with code 1')
                yield result

    settings = Settings(start=Point(1, 8, 32), max_steps=1, num_classes=8,
                        limits=Limits(max_clip_span=16, max_crop=64))
    summary, _ = search(settings, tmp_path, OneFails())
    failed = summary['candidates']['step1-fast']
    assert 'J' not in failed and 'exited with code 1' in failed['error']
    # fast would have been kept (expansion_synthetic's J); temporal is next.
    assert summary['final']['cid'] != 'step1-fast'
    assert len([r for r in summary['steps'][0]['candidates']
                if 'J' in r]) == 5
    again, launcher = search(settings, tmp_path)
    assert launcher.calls == []
