"""The X3D paper's search (section 3.2): progressive forward expansion,
then backward contraction to a target complexity.

Each step builds one candidate per axis that can grow (one axis changed,
one forward step), computes its complexity C(X), trains it with the proxy
schedule, measures J(X) and keeps the candidate with the highest J. The
candidates of a step each roughly double C (X-Width about 3.6x), and the
paper keeps the most accurate; ``'top1_per_doubling'`` keeps the one with
the most accuracy gained per doubling of C instead.

A target is a budget: when the kept candidate passes it, the points of its
step, from the step's start to the candidate, both included, are searched
for the one nearest to the target within ``tolerance`` (one at or under
the target before one above it), and that network is trained and
evaluated (the paper's backward contraction). When no point of the kept
axis is within the tolerance, the best candidate of the step whose axis
has one is contracted instead; when no axis has one, the search ends at
the last network under the target and says by how much it misses it.
Without a target it stops after ``max_steps`` steps.

The state (every candidate's point, C, J, metrics, log and checkpoint
paths, failures, and a fingerprint of everything that decides a J) is
written after each candidate; a search started again with the same
fingerprint reuses every finished candidate and only runs the others, and
one with another fingerprint is refused unless told to reuse.
"""
import hashlib
import json
import math
import os.path as osp
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from x3d_plugin.utils.fileio import write_file_atomically
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


# Keeps the candidate with the most top-1 gained per doubling of C(X)
# over the step's start; J itself is the top-1.
PER_DOUBLING = 'top1_per_doubling'
CRITERIA_HELP = (
    "'top1' (the default and the paper's rule: every candidate of a step "
    "roughly doubles C(X) and the most accurate is kept), "
    f"'{PER_DOUBLING}' (keep the candidate whose top-1 gained over the "
    "step's start, divided by log2 of its C(X) ratio to the start, is "
    "highest: X-Width's steps cost about 3.6x, the others about 2x), "
    "dict(type='top1_minus_gflops', weight=W) or 'module:function'")


def make_criterion(spec: Union[str, Dict]) -> Callable:
    """J from its config: ``'top1'``, ``'top1_per_doubling'`` (J is the
    top-1; the step keeps the best gain per doubling of C(X), see
    :meth:`Search.score`), ``dict(type='top1_minus_gflops', weight=...)``
    or ``'module:function'`` (called with the metrics, the point and its
    GFLOPs).

    Args:
        spec: the criterion's config.
    """
    if spec in ('top1', PER_DOUBLING):
        return top1
    if isinstance(spec, dict) and spec.get('type') == 'top1_minus_gflops':
        return top1_minus_gflops(float(spec['weight']))
    if isinstance(spec, str) and ':' in spec:
        return import_function(spec)
    raise ValueError(f'unknown criterion {spec!r}: use {CRITERIA_HELP}')


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
        criterion: J's config (:func:`make_criterion`) and, with
            ``'top1_per_doubling'``, the rule a step keeps by.
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


def fingerprint(parts: Dict[str, object]) -> Dict[str, dict]:
    """What decides a candidate's J, part by part: each part's SHA-256
    (of its JSON) and, when short, its value (for the message that names a
    changed part).

    Args:
        parts: name -> JSON-able value (a setting, a config's content, a
            file's SHA-256).
    """
    out = {}
    for name, value in parts.items():
        text = json.dumps(value, sort_keys=True, default=repr)
        out[name] = dict(sha256=hashlib.sha256(text.encode()).hexdigest())
        if len(text) <= 60:  # short enough to name (not a digest)
            out[name]['value'] = text
    return out


def changed_parts(old: Optional[Dict[str, dict]],
                  new: Dict[str, dict]) -> List[str]:
    """The parts of fingerprint ``new`` that differ from ``old``, each
    as ``name`` or ``name (old -> new)`` when both values are short."""
    old = old or {}
    changes = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, {}), new.get(name, {})
        if a.get('sha256') == b.get('sha256'):
            continue
        if 'value' in a and 'value' in b:
            changes.append(f'{name} ({a["value"]} -> {b["value"]})')
        elif not a:
            changes.append(f'{name} (not recorded)')
        else:
            changes.append(name)
    return changes


class SearchState:
    """The search's record, a JSON file rewritten atomically after each
    candidate.

    Args:
        path: the JSON file (read when it exists).
        fingerprint: what decides a candidate's J (:func:`fingerprint`);
            a state with finished candidates and another fingerprint is
            refused, None: not checked.
        reuse_results: accept a state whose fingerprint differs and keep
            its candidates' J (the new fingerprint is recorded).
    """

    def __init__(self, path: str, fingerprint: Optional[Dict] = None,
                 reuse_results: bool = False):
        self.path = path
        self.candidates: Dict[str, dict] = {}
        self.fingerprint = fingerprint
        self.reused: List[str] = []
        stored = None
        if osp.exists(path):
            try:
                with open(path, encoding='utf-8') as f:
                    data = json.load(f)
                self.candidates = data['candidates']
                stored = data.get('fingerprint')
            except (json.JSONDecodeError, KeyError) as err:
                raise SearchError(
                    f'search state {path} is unreadable ({err}); move it '
                    'away to start this search afresh') from None
        if fingerprint is None or not self.candidates:
            return
        changes = changed_parts(stored, fingerprint)
        if changes and not reuse_results:
            raise SearchError(
                f'{path} holds the candidates of another search: '
                f'{"; ".join(changes)} changed since they were evaluated, '
                'so their J would not be this search\'s. Give another '
                '--work-dir to search afresh, or add --reuse-results to '
                'keep their J anyway')
        self.reused = changes
        if changes:
            self.save()  # the next run is the same search as this one

    def save(self) -> None:
        data = {'candidates': self.candidates}
        if self.fingerprint is not None:
            data['fingerprint'] = self.fingerprint
        write_file_atomically(json.dumps(data, indent=1), self.path)


def _cell(value, fmt):
    return '-' if value is None else format(value, fmt)


def span_change(base: Point, point: Point, axis: str) -> str:
    """The clip span of ``point`` and, where ``axis`` should have kept the
    span of ``base`` (every axis but X-Temporal), how it changed."""
    span = point.clip_span
    if axis == 'temporal' or span == base.clip_span:
        return str(span)
    return f'{span} ({100 * (span / base.clip_span - 1):+.0f}%)'


def gain_per_doubling(record: dict, base: dict) -> Optional[float]:
    """J gained over ``base`` per doubling of C(X) (None without J or
    without growth)."""
    if record.get('J') is None or base.get('J') is None:
        return None
    ratio = record['gflops'] / base['gflops']
    if ratio <= 1.0:
        return None
    return (record['J'] - base['J']) / math.log2(ratio)


def table(records: List[dict], chosen: Optional[str] = None,
          base: Optional[dict] = None) -> str:
    """A Markdown table of candidate records, the chosen one marked.

    Args:
        records: the candidates' records.
        chosen: the kept candidate's id.
        base: the step's start record: each row then shows its C(X)
            ratio to it, the clip span's change and J gained per doubling.
    """
    lines = [
        '| candidate | axis | input (TxS², rate) | span | width, depth, '
        'bottleneck | GFLOPs | x C | params (M) | J | J per 2x C '
        '| time (s) | |',
        '| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: '
        '| ---: | --- |'
    ]
    for r in records:
        p = Point.from_dict(r['point'])
        mark = '**kept**' if r['cid'] == chosen else (
            'failed' if r.get('error') else '')
        if base is not None:
            span = span_change(Point.from_dict(base['point']), p, r['axis'])
            ratio = f"{r['gflops'] / base['gflops']:.2f}"
            gain = _cell(gain_per_doubling(r, base), '+.2f')
        else:
            span, ratio, gain = str(p.clip_span), '-', '-'
        lines.append(
            f"| {r['cid']} | {r['axis']} | {p.num_frames}x{p.crop_size}², "
            f"{p.sampling_rate} | {span} | {p.width_factor:g}, "
            f"{p.depth_factor:g}, {p.bottleneck_factor:g} | "
            f"{r['gflops']:.4f} | {ratio} | "
            f"{r['params'] / 1e6:.2f} | {_cell(r.get('J'), '.2f')} | "
            f"{gain} | {_cell(r.get('wall_s'), '.0f')} | {mark} |")
    return '\n'.join(lines)


def nearest_to_target(points: List[Point], cost: Callable[[Point], float],
                      target: float,
                      tolerance: float) -> Tuple[Optional[Point], float]:
    """The point of ``points`` (C(X) non-decreasing along them) nearest to
    ``target`` within ``tolerance`` (relative), a point at or under the
    target before any above it; None when none is within. Also returns
    the relative distance of the nearest point, within or not.

    C(X) grows along an axis, so only the last point under the target and
    the first at or over it can be nearest; a bisection finds them with
    few complexity counts.

    Args:
        points: the choices, cheapest first.
        cost: C(X) of a point.
        target: the target C(X).
        tolerance: the largest accepted ``|C / target - 1|``.
    """
    low, high = 0, len(points)
    while low < high:
        middle = (low + high) // 2
        if cost(points[middle]) < target:
            low = middle + 1
        else:
            high = middle
    under = points[low - 1] if low > 0 else None
    over = points[low] if low < len(points) else None
    if over is not None and cost(over) == target:
        under = over
    distance = {p: abs(cost(p) / target - 1) for p in (under, over)
                if p is not None}
    for point in (under, over):  # at or under the target first
        if point is not None and distance[point] <= tolerance:
            return point, distance[point]
    return None, min(distance.values())


def target_outcome(settings: 'Settings', final: dict, reason: str) -> dict:
    """How the final network stands against the target (None without a
    target): its relative distance, whether it is within the tolerance
    or above the target, and a sentence saying so."""
    target = settings.target_gflops
    if target is None:
        return None
    relative = final['gflops'] / target - 1
    within = abs(relative) <= settings.tolerance
    where = 'above' if relative > 0 else 'under'
    if within:
        note = (f'{final["gflops"]:.4f} GFLOPs, {100 * abs(relative):.1f}% '
                f'{where} the target {target:g} (within the '
                f'{100 * settings.tolerance:g}% tolerance)')
    else:
        note = (f'the target {target:g} GFLOPs is missed by '
                f'{100 * abs(relative):.1f}%: {final["gflops"]:.4f} GFLOPs, '
                f'{abs(final["gflops"] - target):.4f} {where} it; {reason}')
    return dict(target_gflops=target, final_gflops=final['gflops'],
                relative=relative, within_tolerance=within,
                above_target=relative > 0, note=note)


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
            interrupted, busy = [], []
            for result in self.launcher.run(jobs, self._progress):
                if result.get('interrupted'):
                    interrupted.append(result['cid'])
                elif result.get('busy'):
                    busy.append(f'{result["cid"]}: {result["busy"]}')
                else:
                    self._finish(records[result['cid']], result)
            if busy:
                raise SearchError('; '.join(busy))
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

    def score(self, record: dict, base: dict) -> Tuple[float, float]:
        """What a step maximises to keep a candidate: J (or, with
        ``'top1_per_doubling'``, J gained over ``base`` per doubling of
        C(X)); equal scores: the cheaper one."""
        if self.settings.criterion == PER_DOUBLING:
            gain = gain_per_doubling(record, base)
            value = record['J'] if gain is None else gain
        else:
            value = record['J']
        return (value, -record['gflops'])

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
        reason = f'the search made its {s.max_steps} step(s)'
        for step in range(1, (s.max_steps or 10**6) + 1):
            if self._reached(current['gflops']):
                final = current
                break
            point = Point.from_dict(current['point'])
            candidates, skipped = [], {}
            for axis in s.axes:
                why = why_not(point, axis, s.limits)
                if why:
                    skipped[axis] = why
                else:
                    candidates.append(
                        (f'step{step}-{axis}', axis, expand(point, axis)))
            self.log(f'step {step} from {point.describe()} '
                     f'({current["gflops"]:.4f} GFLOPs)')
            for axis, why in skipped.items():
                self.log(f'  {axis}: left out, {why}')
            if not candidates:
                self.log('  no axis can grow; the search ends here')
                reason = f'no axis can grow from {current["cid"]}'
                final = current
                break
            records = self.evaluate(step, candidates)
            good = [r for r in records if 'J' in r]
            if not good:
                raise SearchError(
                    f'every candidate of step {step} failed: ' + '; '.join(
                        f'{r["cid"]}: {r.get("error")}' for r in records))
            # Highest J; equal J: the cheaper one, then axis order.
            chosen = max(good, key=lambda r: self.score(r, current))
            self.steps.append(dict(step=step, start=current['cid'],
                                   candidates=records, skipped=skipped,
                                   chosen=chosen['cid']))
            self.log(table(records, chosen['cid'], current))
            target = s.target_gflops
            if target is not None and chosen['gflops'] > target:
                final, reason = self._contract(step, current, chosen, good)
                if final is not current:
                    path.append(final)
                break
            path.append(chosen)
            current = final = chosen
        outcome = target_outcome(s, final, reason)
        if outcome is not None:
            self.log(f'target: {outcome["note"]}')
        return dict(settings=s, start=start, path=path, final=final,
                    steps=self.steps, candidates=self.state.candidates,
                    target=outcome)

    def _contract(self, step: int, before: dict, chosen: dict,
                  good: List[dict]) -> Tuple[dict, str]:
        """The paper's backward contraction: of the points of the kept
        candidate's step, from ``before`` to the candidate, both included,
        the one nearest to the target within the tolerance (at or under
        the target before above it), trained and evaluated. When no point
        of that axis is within the tolerance, the best-J candidate of the
        step whose axis has one is contracted instead; when no axis has
        one, the search ends at ``before``, the last network under the
        target. Returns the final record and, for a missed target, why."""
        s = self.settings
        target, tolerance = s.target_gflops, s.tolerance
        origin = Point.from_dict(before['point'])
        others = sorted((r for r in good if r is not chosen),
                        key=lambda r: self.score(r, before), reverse=True)
        misses = []
        for record in [chosen] + others:
            axis = record['axis']
            end = Point.from_dict(record['point'])
            points = [origin] + contractions(origin, axis) + [end]
            point, distance = nearest_to_target(
                points, lambda p: self.complexity(p)[0], target, tolerance)
            if point is None:
                misses.append(f'{axis} ({100 * distance:.1f}% at best)')
                self.log(f'  no point of the {axis} step from '
                         f'{before["cid"]} to {record["cid"]} is within '
                         f'{100 * tolerance:g}% of the target {target:g} '
                         f'(nearest: {100 * distance:.1f}% away)')
                continue
            if record is not chosen:
                self.log(f'  contracting the {axis} step instead: the '
                         f'best-J candidate of step {step} ({record["cid"]},'
                         f' J={record["J"]:.2f}) whose axis reaches the '
                         'target')
            gflops = self.complexity(point)[0]
            self.log(f'contraction of the {axis} step to {point.describe()}:'
                     f' {gflops:.4f} GFLOPs for a target of {target:g} '
                     f'({100 * (gflops / target - 1):+.1f}%)')
            if point == end:
                self.log(f'  {record["cid"]} itself is the nearest point')
                return record, ''
            if point == origin:
                return before, ''
            contracted = self.evaluate(step, [(f'contract{step}-{axis}',
                                               axis, point)])[0]
            self.steps.append(dict(step=f'{step} (contraction)',
                                   start=before['cid'],
                                   candidates=[contracted], skipped={},
                                   chosen=contracted['cid']))
            if 'J' not in contracted:
                raise SearchError(
                    f'the contracted network failed: {contracted["error"]}')
            return contracted, ''
        reason = (f'no step from {before["cid"]} has a point within '
                  f'{100 * tolerance:g}% of it ({", ".join(misses)}), so the '
                  f'search ends at {before["cid"]}, the last network under '
                  'the target')
        self.log(f'  {reason}')
        return before, reason


def elapsed(start: float) -> str:
    seconds = int(time.time() - start)
    return f'{seconds // 60} min {seconds % 60} s'
