"""The expansion search's target is a budget: the contraction takes the
nearest point of a step to the target (the step's ends included, at or
under the target before above it), falls back to another axis when the
kept one cannot reach the target, and says when the target is missed."""
import json

import pytest

from x3d_plugin.apis.expansion import (Job, Point, Search, SearchState,
                                       Settings, complexity, contractions,
                                       expand)
from x3d_plugin.apis.expansion.report import write_path
from x3d_plugin.apis.expansion.search import nearest_to_target, table

START = Point(1, 8, 32)


def cost(point):
    return complexity(point, 8)[0]


class Known:
    """A launcher whose J is ``scores[axis]`` (a contraction point scores
    as its axis)."""
    name = 'known'

    def __init__(self, scores):
        self.scores = scores
        self.calls = []

    def run(self, jobs, on_progress=None):
        for job in jobs:
            self.calls.append(job.cid)
            axis = job.cid.split('-')[-1]
            yield dict(cid=job.cid, wall_s=0.0,
                       metrics={'acc/top1': self.scores.get(axis, 0.1)})


def run_search(tmp_path, axes, target, scores, criterion='top1',
               max_steps=None):
    logs = []
    launcher = Known(scores)
    settings = Settings(start=START, axes=axes, target_gflops=target,
                        max_steps=max_steps, num_classes=8,
                        criterion=criterion)

    def make_job(cid, point):
        return Job(cid, point.to_dict(), '', str(tmp_path / cid), '')

    summary = Search(settings, SearchState(str(tmp_path / 'state.json')),
                     make_job, launcher, lambda p: complexity(p, 8),
                     log=logs.append).run()
    return summary, launcher, logs


@pytest.mark.parametrize('costs,target,expected', [
    # The step's start is the nearest point (and at the target).
    ([1.0, 2.0, 3.0, 4.0], 1.0, 0),
    # The step's end is the nearest and under the target.
    ([1.0, 2.0, 3.0, 4.0], 4.1, 3),
    # Nothing under the target is within 5%: the end above it is taken.
    ([1.0, 2.0, 3.0, 4.0], 3.9, 3),
    # The nearest is above the target, but one under it is within 5%.
    ([1.0, 1.96, 2.01, 4.0], 2.0, 1),
    # Only the start is within 5% (above the target).
    ([1.0, 2.0, 3.0], 0.98, 0),
    # Nothing within 5%.
    ([1.0, 2.0, 3.0], 2.5, None),
    ([1.0, 2.0, 3.0], 3.5, None),
])
def test_nearest_point_includes_the_ends_and_prefers_under(
        costs, target, expected):
    points = [Point(1, 8, 8 * (i + 1)) for i in range(len(costs))]
    by_point = dict(zip(points, costs))
    point, distance = nearest_to_target(points, by_point.__getitem__, target,
                                        0.05)
    assert point == (None if expected is None else points[expected])
    best = min(abs(c / target - 1) for c in costs)
    if expected is None:
        assert distance == pytest.approx(best)
    else:
        assert distance <= 0.05


def test_kept_axis_that_cannot_reach_the_target_contracts_another(tmp_path):
    """Temporal (1 -> 2 frames, nothing between) is kept for its J and
    passes the target; depth, the next best, is contracted onto it."""
    c0 = cost(START)
    target = 1.3 * c0  # temporal: 1.0x or 1.72x; depth reaches 1.30x
    assert not any(abs(cost(p) / target - 1) <= 0.05
                   for p in (START, expand(START, 'temporal')))
    summary, launcher, logs = run_search(
        tmp_path, ['temporal', 'depth', 'fast'], target,
        dict(temporal=0.9, depth=0.5, fast=0.4))
    assert summary['steps'][0]['chosen'] == 'step1-temporal'
    final = summary['final']
    assert final['cid'] == 'contract1-depth'
    assert Point.from_dict(final['point']) in contractions(START, 'depth')
    assert abs(final['gflops'] / target - 1) <= 0.05
    assert summary['target']['within_tolerance']
    assert [r['cid'] for r in summary['path']] == ['start', final['cid']]
    assert launcher.calls[-1] == 'contract1-depth'
    assert any('contracting the depth step instead' in line
               for line in logs)


def test_no_axis_reaching_the_target_ends_under_it_and_says_so(tmp_path):
    c0 = cost(START)
    target = 1.3 * c0
    summary, launcher, logs = run_search(tmp_path, ['temporal', 'fast'],
                                         target, dict(temporal=0.9))
    assert summary['final']['cid'] == 'start'
    outcome = summary['target']
    assert outcome['final_gflops'] < target
    assert not outcome['within_tolerance'] and not outcome['above_target']
    assert outcome['relative'] == pytest.approx(1 / 1.3 - 1)
    assert 'missed by 23.1%' in outcome['note']
    assert logs[-1] == f'target: {outcome["note"]}'
    # No contraction was trained; path.json says the same.
    assert launcher.calls == ['start', 'step1-temporal', 'step1-fast']
    written = json.loads(open(write_path(summary, str(tmp_path))).read())
    assert written['target']['note'] == outcome['note']
    assert written['final']['cid'] == 'start'


def test_a_point_under_the_target_wins_over_a_nearer_one_above(tmp_path):
    """Width from 1x8 32²: 1.867x and 1.912x of the start are both within
    5% of a target of 1.904x; the one under it is taken."""
    c0 = cost(START)
    points = contractions(START, 'width')
    under = next(p for p in points
                 if cost(p) / c0 == pytest.approx(1.867, abs=1e-3))
    target = cost(under) * 1.02
    above = min((p for p in points if cost(p) > target), key=cost)
    assert cost(above) - target < target - cost(under)
    summary, _, _ = run_search(tmp_path, ['width'], target, {})
    assert Point.from_dict(summary['final']['point']) == under
    assert not summary['target']['above_target']


def test_a_kept_candidate_above_the_target_within_tolerance_is_said(
        tmp_path):
    """Temporal has nothing between its ends; its end 3% above the target
    is the only point within 5%: it is final, and the summary says it is
    above the target."""
    target = cost(expand(START, 'temporal')) / 1.03
    summary, launcher, _ = run_search(tmp_path, ['temporal'], target, {})
    assert summary['final']['cid'] == 'step1-temporal'
    assert 'contract1-temporal' not in launcher.calls
    outcome = summary['target']
    assert outcome['above_target'] and outcome['within_tolerance']
    assert '3.0% above the target' in outcome['note']


def test_per_doubling_keeps_the_cheaper_gain(tmp_path):
    """Width costs 2.5x here, depth 1.57x; width's J is higher, but depth
    gains more per doubling of C(X)."""
    scores = dict(width=0.60, depth=0.50, start=0.30)
    for criterion, kept in (('top1', 'step1-width'),
                            ('top1_per_doubling', 'step1-depth')):
        folder = tmp_path / criterion
        folder.mkdir()
        summary, _, _ = run_search(folder, ['width', 'depth'], None, scores,
                                   criterion, max_steps=1)
        assert summary['steps'][0]['chosen'] == kept
        rows = table(summary['steps'][0]['candidates'], kept,
                     summary['start']).splitlines()[2:]
        ratios = [float(r.split('|')[7]) for r in rows]
        assert ratios == pytest.approx([2.50, 1.57], abs=0.01)
        gains = [float(r.split('|')[10]) for r in rows]
        # (60 - 30) / log2(2.50) = 22.7; (50 - 30) / log2(1.57) = 30.8
        assert gains == pytest.approx([22.7, 30.8], abs=0.1)


@pytest.mark.parametrize('rate,span', [(6, '24'), (5, '24 (+20%)'),
                                       (3, '16 (+33%)')])
def test_fast_rows_say_how_the_span_changed(rate, span):
    """X-Fast keeps the span where the rate halves exactly; an odd rate
    rounds up and the row gives the new span and its change."""
    base = Point(4, rate, 32)
    grown = expand(base, 'fast')
    assert grown.num_frames == 8
    records = [dict(cid='start', axis='start', point=base.to_dict(),
                    gflops=cost(base), params=1, J=50.0),
               dict(cid='step1-fast', axis='fast', point=grown.to_dict(),
                    gflops=cost(grown), params=1, J=60.0)]
    row = table(records[1:], 'step1-fast', records[0]).splitlines()[2]
    assert row.split('|')[4].strip() == span
    # X-Temporal doubles the span by design: no change is flagged.
    longer = expand(base, 'temporal')
    row = table([dict(records[1], axis='temporal', point=longer.to_dict())],
                None, records[0]).splitlines()[2]
    assert row.split('|')[4].strip() == str(2 * base.clip_span)
