"""The X3D paper's search (section 3.2): progressive forward expansion,
then backward contraction to a target complexity.

Each step builds one candidate per axis that can grow (one axis changed,
one forward step), computes its complexity C(X), trains it with the proxy
schedule, measures J(X) and keeps the candidate with the highest J; all
candidates of a step cost about the same (each roughly doubles C), so the
paper's rule is the best accuracy. The search stops when the kept
candidate passes the target: that last expansion is shrunk until C(X) is
within ``tolerance`` of the target (the paper's backward contraction), and
the contracted network is trained and evaluated too. Without a target it
stops after ``max_steps`` steps.

The state (every candidate's point, C, J, metrics, log and checkpoint
paths, failures) is written after each candidate; a search started again
with the same settings reuses every finished candidate and only runs the
others.
"""
import json
import os
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from .launchers import Job, import_function
from .space import AXES, Limits, Point, contractions, expand, why_not


class SearchError(RuntimeError):
    """The search cannot go on (all candidates of a step failed, the
    state belongs to another search, ...)."""


class SearchInterrupted(RuntimeError):
    """Stopped by SIGTERM; the state holds every finished candidate and
    the interrupted ones resume from their checkpoints next time."""


def top1(metrics: Dict[str, float], point: Point, gflops: float) -> float:
    """Validation top-1 in percent (the paper's J)."""
    return 100.0 * metrics['acc/top1']


def top1_minus_gflops(weight: float) -> Callable:
    """Top-1 in percent minus ``weight`` points per GFLOP."""

    def criterion(metrics, point, gflops):
        return top1(metrics, point, gflops) - weight * gflops

    return criterion


def make_criterion(spec: Union[str, Dict]) -> Callable:
    """J from its config: ``'top1'``, ``dict(type='top1_minus_gflops',
    weight=...)`` or ``'module:function'`` (called with the metrics, the
    point and its GFLOPs)."""
    if spec == 'top1':
        return top1
    if isinstance(spec, dict) and spec.get('type') == 'top1_minus_gflops':
        return top1_minus_gflops(float(spec['weight']))
    if isinstance(spec, str) and ':' in spec:
        return import_function(spec)
    raise ValueError(f'unknown criterion {spec!r}: use "top1", '
                     'dict(type="top1_minus_gflops", weight=W) or '
                     '"module:function"')


@dataclass
class Settings:
    """What defines a search; a restart must have the same.

    Attributes:
        start: the first network (X2D or the user's).
        axes: the axes that may grow.
        target_gflops: stop and contract at this C(X) (GFLOPs per clip).
        max_steps: stop after this many steps (when no target is reached
            first).
        limits: what the data allows.
        num_classes: the head's classes (part of C(X)).
        criterion: J's config (:func:`make_criterion`).
        tolerance: how close the contracted C(X) must be to the target.
    """
    start: Point
    axes: Sequence[str] = AXES
    target_gflops: Optional[float] = None
    max_steps: Optional[int] = None
    limits: Limits = field(default_factory=Limits)
    num_classes: int = 400
    criterion: Union[str, Dict] = 'top1'
    tolerance: float = 0.05

    def __post_init__(self):
        unknown = [a for a in self.axes if a not in AXES]
        if unknown or not self.axes:
            raise ValueError(f'axes must be a non-empty subset of {AXES}, '
                             f'got {list(self.axes)}')
        if self.target_gflops is None and self.max_steps is None:
            raise ValueError('give a target complexity (target_gflops) or '
                             'a number of steps (max_steps)')
        if self.target_gflops is not None and self.target_gflops <= 0:
            raise ValueError(f'target_gflops must be positive, got '
                             f'{self.target_gflops}')
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f'max_steps must be >= 1, got {self.max_steps}')


class SearchState:
    """The search's record, a JSON file rewritten atomically after each
    candidate."""

    def __init__(self, path: str):
        self.path = path
        self.candidates: Dict[str, dict] = {}
        if osp.exists(path):
            try:
                with open(path, encoding='utf-8') as f:
                    self.candidates = json.load(f)['candidates']
            except (json.JSONDecodeError, KeyError) as err:
                raise SearchError(
                    f'search state {path} is unreadable ({err}); move it '
                    'away to start this search afresh') from None

    def save(self) -> None:
        tmp = f'{self.path}.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump({'candidates': self.candidates}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _cell(value, fmt):
    return '-' if value is None else format(value, fmt)


def table(records: List[dict], chosen: Optional[str] = None) -> str:
    """A Markdown table of candidate records, the chosen one marked."""
    lines = [
        '| candidate | axis | input (TxS², rate) | width, depth, bottleneck '
        '| GFLOPs | params (M) | J | time (s) | |',
        '| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |'
    ]
    for r in records:
        p = Point.from_dict(r['point'])
        mark = '**kept**' if r['cid'] == chosen else (
            'failed' if r.get('error') else '')
        lines.append(
            f"| {r['cid']} | {r['axis']} | {p.num_frames}x{p.crop_size}², "
            f"{p.sampling_rate} | {p.width_factor:g}, {p.depth_factor:g}, "
            f"{p.bottleneck_factor:g} | {r['gflops']:.4f} | "
            f"{r['params'] / 1e6:.2f} | {_cell(r.get('J'), '.2f')} | "
            f"{_cell(r.get('wall_s'), '.0f')} | {mark} |")
    return '\n'.join(lines)


class Search:
    """Forward expansion and backward contraction over ``launcher``.

    Args:
        settings: what to search.
        state: the record to resume from and write to.
        make_job: ``make_job(cid, point)`` -> :class:`Job` (writes the
            candidate's config).
        launcher: runs jobs (``run(jobs, on_progress)`` yields results).
        complexity: ``complexity(point)`` -> (GFLOPs, params).
        log: where progress lines go.
        retry_failed: run failed candidates of the state again.
    """

    def __init__(self, settings: Settings, state: SearchState,
                 make_job: Callable[[str, Point], Job], launcher,
                 complexity: Callable[[Point], Tuple[float, int]],
                 log: Callable[[str], None] = print,
                 retry_failed: bool = False):
        self.settings = settings
        self.state = state
        self.make_job = make_job
        self.launcher = launcher
        self.complexity = complexity
        self.log = log
        self.retry_failed = retry_failed
        self.criterion = make_criterion(settings.criterion)
        self.steps: List[dict] = []

    # -- one batch of candidates -------------------------------------------

    def _record(self, cid: str, step: int, axis: str, point: Point) -> dict:
        gflops, params = self.complexity(point)
        old = self.state.candidates.get(cid)
        if old is not None and old['point'] != point.to_dict():
            raise SearchError(
                f'{self.state.path} belongs to another search: candidate '
                f'{cid} was {Point.from_dict(old["point"]).describe()}, this '
                f'search makes it {point.describe()} (changed start, axes '
                'or data?); use a new --work-dir')
        return dict(cid=cid, step=step, axis=axis, point=point.to_dict(),
                    gflops=gflops, params=params)

    def evaluate(self, step: int,
                 candidates: List[Tuple[str, str, Point]]) -> List[dict]:
        """Records of ``(cid, axis, point)`` candidates, each trained and
        evaluated unless the state already has it."""
        records, jobs = {}, []
        for cid, axis, point in candidates:
            record = self._record(cid, step, axis, point)
            old = self.state.candidates.get(cid)
            if old is not None and ('J' in old or (old.get('error') and
                                                   not self.retry_failed)):
                self.log(f'  {cid}: already evaluated (J={old.get("J")}), '
                         'not run again')
                records[cid] = old
                continue
            records[cid] = record
            jobs.append(self.make_job(cid, point))
        if jobs:
            self.log(f'  running {len(jobs)} candidate(s) on the '
                     f'{self.launcher.name} launcher: '
                     f'{", ".join(j.cid for j in jobs)}')
            interrupted = []
            for result in self.launcher.run(jobs, self._progress):
                if result.get('interrupted'):
                    interrupted.append(result['cid'])
                else:
                    self._finish(records[result['cid']], result)
            if interrupted:
                raise SearchInterrupted(
                    f'stopped with {", ".join(interrupted)} unfinished; the '
                    f'state is in {self.state.path}, run the same command to '
                    'continue')
        return [records[cid] for cid, _, _ in candidates]

    def _finish(self, record: dict, result: dict) -> None:
        record.update({k: v for k, v in result.items() if k != 'cid'})
        record.pop('J', None)
        if 'error' not in result:
            point = Point.from_dict(record['point'])
            try:
                record['J'] = float(
                    self.criterion(result['metrics'], point,
                                   record['gflops']))
                record.pop('error', None)
            except Exception as err:
                record['error'] = (f'criterion failed on metrics '
                                   f'{result["metrics"]}: {err}')
        self.state.candidates[record['cid']] = record
        self.state.save()
        if 'J' in record:
            self.log(f'  {record["cid"]}: J={record["J"]:.2f} at '
                     f'{record["gflops"]:.4f} GFLOPs '
                     f'({record["wall_s"]:.0f} s)')
        else:
            self.log(f'  {record["cid"]}: FAILED, {record["error"]}')

    def _progress(self, lines: Dict[str, str]) -> None:
        for cid, line in lines.items():
            self.log(f'  .. {cid}: {line}')

    # -- the search ----------------------------------------------------------

    def _reached(self, gflops: float) -> bool:
        target = self.settings.target_gflops
        return (target is not None
                and gflops >= target * (1 - self.settings.tolerance))

    def run(self) -> dict:
        """Run (or finish) the search; returns the summary that
        :mod:`.report` writes."""
        s = self.settings
        self.log(f'start: {s.start.describe()}')
        gflops = self.complexity(s.start)[0]
        if s.target_gflops is not None and gflops > (
                s.target_gflops * (1 + s.tolerance)):
            raise SearchError(
                f'the start {s.start.describe()} already costs '
                f'{gflops:.4f} GFLOPs, over the target '
                f'{s.target_gflops:g}; start from a smaller network')
        start = self.evaluate(0, [('start', 'start', s.start)])[0]
        if 'J' not in start:
            raise SearchError(f'the start network failed: {start["error"]}')
        path, current, final = [start], start, start
        for step in range(1, (s.max_steps or 10**6) + 1):
            if self._reached(current['gflops']):
                final = current
                break
            point = Point.from_dict(current['point'])
            candidates, skipped = [], {}
            for axis in s.axes:
                reason = why_not(point, axis, s.limits)
                if reason:
                    skipped[axis] = reason
                else:
                    candidates.append(
                        (f'step{step}-{axis}', axis, expand(point, axis)))
            self.log(f'step {step} from {point.describe()} '
                     f'({current["gflops"]:.4f} GFLOPs)')
            for axis, reason in skipped.items():
                self.log(f'  {axis}: left out, {reason}')
            if not candidates:
                self.log('  no axis can grow; the search ends here')
                final = current
                break
            records = self.evaluate(step, candidates)
            good = [r for r in records if 'J' in r]
            if not good:
                raise SearchError(
                    f'every candidate of step {step} failed: ' + '; '.join(
                        f'{r["cid"]}: {r.get("error")}' for r in records))
            # Highest J; equal J: the cheaper one, then axis order.
            chosen = max(good, key=lambda r: (r['J'], -r['gflops']))
            self.steps.append(dict(step=step, start=current['cid'],
                                   candidates=records, skipped=skipped,
                                   chosen=chosen['cid']))
            self.log(table(records, chosen['cid']))
            target = s.target_gflops
            if target is not None and chosen['gflops'] > target * (
                    1 + s.tolerance):
                final = self._contract(step, current, chosen)
                if final is not current:
                    path.append(final)
                break
            path.append(chosen)
            current = final = chosen
        return dict(settings=s, start=start, path=path, final=final,
                    steps=self.steps, candidates=self.state.candidates)

    def _contract(self, step: int, before: dict, after: dict) -> dict:
        """The paper's backward contraction of the expansion from
        ``before`` to ``after``: of the points between them, the one whose
        C(X) is closest to the target, trained and evaluated."""
        target = self.settings.target_gflops
        axis = after['axis']
        points = contractions(Point.from_dict(before['point']), axis)
        if not points:
            self.log(f'  the {axis} step cannot be shrunk; the search ends '
                     f'at {after["cid"]}')
            return after
        # C(X) grows along the axis: bisect for the first point at or
        # over the target; it or the one before it is the closest.
        low, high = 0, len(points)
        while low < high:
            middle = (low + high) // 2
            if self.complexity(points[middle])[0] < target:
                low = middle + 1
            else:
                high = middle
        nearest = points[max(0, low - 1):low + 1]
        point = min(nearest,
                    key=lambda p: abs(self.complexity(p)[0] - target))
        gflops = self.complexity(point)[0]
        distance = abs(gflops - target)
        self.log(f'contraction of the {axis} step to {point.describe()}: '
                 f'{gflops:.4f} GFLOPs for a target of {target:g} '
                 f'({100 * (gflops / target - 1):+.1f}%)')
        if distance > self.settings.tolerance * target:
            self.log(f'  no {axis} point between {before["cid"]} and '
                     f'{after["cid"]} is within '
                     f'{100 * self.settings.tolerance:g}% of the target; '
                     'this is the closest')
        record = self.evaluate(step, [(f'contract{step}-{axis}', axis,
                                       point)])[0]
        self.steps.append(dict(step=f'{step} (contraction)',
                               start=before['cid'], candidates=[record],
                               skipped={}, chosen=record['cid']))
        if 'J' not in record:
            raise SearchError(
                f'the contracted network failed: {record["error"]}')
        return record


def elapsed(start: float) -> str:
    seconds = int(time.time() - start)
    return f'{seconds // 60} min {seconds % 60} s'
