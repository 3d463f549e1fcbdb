"""Imports run one way: registry/compat -> utils -> ops -> models, datasets
-> engine, evaluation -> apis (-> tools). No module imports from a layer above its own,
and models and datasets do not import each other."""
import ast

import pytest

from conftest import ROOT

PACKAGE = ROOT / 'x3d_plugin'
LAYERS = {
    'registry': 0, 'compat': 0, 'version': 0,
    'utils': 1,
    'ops': 2,
    'models': 3, 'datasets': 3,
    'engine': 4, 'evaluation': 4,
    'apis': 5,
}


def part_of(module: str) -> str:
    """``x3d_plugin.models.backbones.x3d`` -> ``models``."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def imports_of(path):
    """Absolute names of the x3d_plugin modules that ``path`` imports."""
    module = '.'.join(path.relative_to(ROOT).with_suffix('').parts)
    package = module if path.name == '__init__.py' else module.rpartition(
        '.')[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                name = '.'.join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ''
            found.append(name)
    return module, [n for n in found if n.split('.')[0] == 'x3d_plugin']


SOURCES = sorted(p for p in PACKAGE.rglob('*.py')
                 if p != PACKAGE / '__init__.py')


@pytest.mark.parametrize('path', SOURCES,
                         ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_no_import_goes_up_a_layer(path):
    module, imported = imports_of(path)
    own = part_of(module)
    assert own in LAYERS, f'{module}: put it in a layer of LAYERS'
    for name in imported:
        other = part_of(name)
        if other in ('', own):
            continue
        assert LAYERS[other] < LAYERS[own], (
            f'{module} imports {name}: {other} is not below {own}')


def test_the_checker_sees_relative_imports():
    module, imported = imports_of(PACKAGE / 'models' / 'backbones' / 'x3d.py')
    assert module == 'x3d_plugin.models.backbones.x3d'
    assert 'x3d_plugin.models.checkpoint' in imported
    assert 'x3d_plugin.registry' in imported
