"""The documentation's links resolve, and the README keeps its promises.

Every relative link and ``#anchor`` in ``README.md``, ``docs/*.md`` and
``configs/**/README.md`` must name a file that exists and, for an anchor,
a heading of that page as GitHub slugs it. ``http(s)`` and ``mailto``
links are not followed.
"""
import re
import unicodedata
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import ROOT

QUICK_START = ('bash tools/quickstart.sh', 'bash tools/run_tests.sh')

_FENCE = re.compile(r'^\s{0,3}(`{3,}|~{3,})')
_HEADING = re.compile(r'^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$')
_CODE_SPAN = re.compile(r'(`+)(.+?)\1')
# [text](target) and ![alt](target); the target may carry a "title".
_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?'
                   r'(?:\s+"[^"]*")?\s*\)')
_EXTERNAL = ('http://', 'https://', 'mailto:')


def doc_files(root: Path = ROOT) -> List[Path]:
    """The pages whose links are checked."""
    files = [root / 'README.md', *sorted((root / 'docs').glob('*.md')),
             *sorted((root / 'configs').rglob('README.md'))]
    return [f for f in files if f.is_file()]


def prose_lines(text: str) -> List[Tuple[int, str]]:
    """(line number, line) of ``text`` outside fenced code blocks."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)[0] * len(match.group(1))
            continue
        if fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(
                    fence[0]):
                fence = None
            continue
        lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lowercased, with every
    character that is not a letter, a mark, a digit, ``-``, ``_`` or a
    space removed, and spaces turned into ``-``."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', text)  # link -> text
    text = re.sub(r'<[^>]+>', '', text)  # inline HTML tags
    kept = []
    for char in text.strip().lower():
        category = unicodedata.category(char)
        if (category[0] in 'LM' or category in ('Nd', 'Pc') or char == '-'):
            kept.append(char)
        elif char == ' ':
            kept.append('-')
    return ''.join(kept)


def anchors(text: str) -> List[str]:
    """Every heading anchor of a page, duplicates numbered ``-1``, ``-2``
    as GitHub numbers them."""
    seen: Dict[str, int] = {}
    result = []
    for _, line in prose_lines(text):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.append(base if count == 0 else f'{base}-{count}')
    return result


def links(text: str) -> List[Tuple[int, str]]:
    """(line number, target) of every link outside code."""
    found = []
    for number, line in prose_lines(text):
        line = _CODE_SPAN.sub('', line)
        found += [(number, m.group(1)) for m in _LINK.finditer(line)]
    return found


def broken_links(page: Path, root: Path = ROOT) -> List[str]:
    """What is wrong with the relative links of ``page``, one line each
    (empty when every link resolves)."""
    problems = []
    text = page.read_text(encoding='utf-8')
    for number, target in links(text):
        if not target or target.startswith(_EXTERNAL):
            continue
        where = f'{page.relative_to(root)}:{number}: {target!r}'
        path, _, anchor = target.partition('#')
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f'{where}: {file} does not exist')
            continue
        if not anchor:
            continue
        if file.is_dir() or file.suffix.lower() != '.md':
            problems.append(f'{where}: an anchor on a file that is not a '
                            'markdown page')
            continue
        page_anchors = anchors(file.read_text(encoding='utf-8'))
        if anchor not in page_anchors:
            problems.append(f'{where}: no heading of {file.name} has the '
                            f'anchor #{anchor} (it has: '
                            f'{", ".join(page_anchors)})')
    return problems


@pytest.mark.parametrize('page', doc_files(),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    problems = broken_links(page)
    assert not problems, '\n'.join(problems)


def test_the_pages_are_found():
    names = {str(p.relative_to(ROOT)) for p in doc_files()}
    assert {'README.md', 'docs/README.md', 'docs/benchmarks.md',
            'docs/fault_tolerance.md', 'configs/README.md',
            'configs/finetune/README.md'} <= names


def test_readme_shows_the_quick_start_commands():
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    prose = {number for number, _ in prose_lines(readme)}
    code = '\n'.join(line for number, line in enumerate(readme.splitlines(), 1)
                     if number not in prose)
    for command in QUICK_START:
        assert re.search(rf'^{re.escape(command)}(\s|$)', code, re.M), (
            f'README.md no longer shows `{command}` in a code block')


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / '.ci' / 'run').read_text(encoding='utf-8')
    assert re.search(r'^\s*bash tools/run_tests\.sh\b', ci, re.M), ci


# The checker itself, on pages made for the purpose.


@pytest.mark.parametrize('heading, expected', [
    ('Quick start', 'quick-start'),
    ("Expansion search: X3D's own method", 'expansion-search-x3ds-own-method'),
    ('Channelwise convolution kernel (`x3d_plugin.ops`), AVX2 machine',
     'channelwise-convolution-kernel-x3d_pluginops-avx2-machine'),
    ('When a process is killed: kill -9, one rank dies, restarts',
     'when-a-process-is-killed-kill--9-one-rank-dies-restarts'),
    ('Loading checkpoints safely (torch >= 2.6)',
     'loading-checkpoints-safely-torch--26'),
    ('Data path: clips/s per data-loader worker',
     'data-path-clipss-per-data-loader-worker'),
    ('See [the demo](demo.md) **now**', 'see-the-demo-now'),
])
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected


def test_duplicate_headings_are_numbered_and_code_is_not_a_heading():
    text = ('# Top\n## Setup\n```bash\n# Setup\n```\n## Setup\n'
            '### Setup\n')
    assert anchors(text) == ['top', 'setup', 'setup-1', 'setup-2']


def test_broken_file_and_anchor_are_reported(tmp_path):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'other.md').write_text('# Other\n## Part two\n')
    page = tmp_path / 'README.md'
    page.write_text(
        '# Title\n## Usage\n'
        '[ok](docs/other.md#part-two) [ok](#usage) [ok](docs/)\n'
        '[web](https://example.com/x.md#nothing) `[code](missing.md)`\n'
        '```\n[fenced](missing.md)\n```\n'
        '[gone](docs/missing.md) [bad anchor](docs/other.md#part-three)\n'
        '![image](#nowhere)\n')
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 3, problems
    assert problems[0].startswith("README.md:8: 'docs/missing.md'")
    assert problems[1].startswith("README.md:8: 'docs/other.md#part-three'")
    assert 'part-two' in problems[1]  # the anchors it has
    assert problems[2].startswith("README.md:9: '#nowhere'")
