"""What a finished search leaves in its work directory: ``path.json``,
``steps.md`` (a table per step), ``expansion.png`` (J against GFLOPs of
every candidate with the kept path drawn through them, the style of the
paper's Figure 2) and ``final_config.py`` (the final network with its clip
and sizes, ready for ``tools/train.py``)."""
import json
import os.path as osp
from typing import Dict, List

from .search import PER_DOUBLING, table
from .space import Point


def _summary_record(record: dict) -> dict:
    point = Point.from_dict(record['point'])
    return dict(cid=record['cid'], axis=record['axis'], point=record['point'],
                description=point.describe(), gflops=record['gflops'],
                params=record['params'], J=record.get('J'),
                checkpoint=record.get('checkpoint'),
                log=record.get('log'))


def write_path(summary: dict, work_dir: str) -> str:
    settings = summary['settings']
    out = osp.join(work_dir, 'path.json')
    data = dict(
        target_gflops=settings.target_gflops,
        max_steps=settings.max_steps,
        axes=list(settings.axes),
        criterion=settings.criterion,
        tolerance=settings.tolerance,
        # None without a target; else how the final network stands
        # against it (within the tolerance, above it, the miss).
        target=summary.get('target'),
        path=[_summary_record(r) for r in summary['path']],
        final=_summary_record(summary['final']),
        failed=[dict(cid=r['cid'], error=r['error'])
                for r in summary['candidates'].values() if 'J' not in r])
    with open(out, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
    return out


def steps_markdown(summary: dict) -> str:
    lines = [f'start: {Point.from_dict(summary["start"]["point"]).describe()}'
             f', {summary["start"]["gflops"]:.4f} GFLOPs, '
             f'J={summary["start"]["J"]:.2f}', '']
    for step in summary['steps']:
        lines.append(f'## step {step["step"]} (from {step["start"]})')
        lines.append('')
        for axis, reason in step['skipped'].items():
            lines.append(f'- {axis} left out: {reason}')
        if step['skipped']:
            lines.append('')
        lines.append(table(step['candidates'], step['chosen'],
                           summary['candidates'].get(step['start'])))
        lines.append('')
    final = summary['final']
    lines.append(f'final: {final["cid"]}, '
                 f'{Point.from_dict(final["point"]).describe()}, '
                 f'{final["gflops"]:.4f} GFLOPs, J={final["J"]:.2f}')
    if summary.get('target'):
        lines.append('')
        lines.append(f'target: {summary["target"]["note"]}')
    return '\n'.join(lines) + '\n'


def plot(summary: dict, out: str) -> str:
    """J against GFLOPs: every candidate, coloured by axis, and the path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    records: List[dict] = [r for r in summary['candidates'].values()
                           if 'J' in r]
    colors: Dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for record in records:
        color = colors.setdefault(record['axis'], f'C{len(colors)}')
        ax.scatter(record['gflops'], record['J'], color=color, s=25,
                   label=record['axis'] if record['axis'] not in
                   ax.get_legend_handles_labels()[1] else None)
    path = summary['path']
    ax.plot([r['gflops'] for r in path], [r['J'] for r in path], 'k-',
            lw=1.2, zorder=0, label='kept path')
    for record in path:
        ax.annotate(record['cid'], (record['gflops'], record['J']),
                    textcoords='offset points', xytext=(4, -10), fontsize=7)
    target = summary['settings'].target_gflops
    if target is not None:
        ax.axvline(target, color='grey', ls='--', lw=0.8, label='target')
    ax.set_xscale('log')
    ax.set_xlabel('GFLOPs per clip (training input)')
    top1_j = summary['settings'].criterion in ('top1', PER_DOUBLING)
    ax.set_ylabel('J (held-out top-1, %)' if top1_j else 'J')
    ax.set_title('X3D expansion: every candidate, and the kept path')
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_all(summary: dict, work_dir: str) -> Dict[str, str]:
    """Write path.json, steps.md and expansion.png; return their paths."""
    steps = osp.join(work_dir, 'steps.md')
    with open(steps, 'w', encoding='utf-8') as f:
        f.write(steps_markdown(summary))
    return dict(path=write_path(summary, work_dir), steps=steps,
                plot=plot(summary, osp.join(work_dir, 'expansion.png')))
