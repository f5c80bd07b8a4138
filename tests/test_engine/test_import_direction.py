"""Edges run downward: no module of ``basicsr_ext/utils`` or ``basicsr_ext/data`` imports ``models``, ``metrics`` or
``losses`` (read from the source, lazy imports inside functions included); the generic engine does not import the
AESOP-specific fidelity metric."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / 'basicsr_ext'
ABOVE = ('models', 'metrics', 'losses')


def imported_modules(source: str, package: list[str]) -> set[str]:
    """Absolute names of every module ``source`` (a module of ``package``) imports, at any depth of its AST."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = '.'.join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f'{module}.{alias.name}' for alias in node.names)  # ``from basicsr_ext import models``
    return names


def offending(path: pathlib.Path, forbidden: tuple[str, ...]) -> list[str]:
    package = ['basicsr_ext', *path.relative_to(PACKAGE).parent.parts]
    return sorted(n for n in imported_modules(path.read_text(encoding='utf-8'), package) if n.startswith(forbidden))


@pytest.mark.parametrize('folder', ['utils', 'data'])
def test_utils_and_data_import_nothing_above_them(folder):
    forbidden = tuple(f'basicsr_ext.{name}' for name in ABOVE)
    files = sorted((PACKAGE / folder).glob('*.py'))
    assert files
    bad = {str(f.relative_to(PACKAGE)): offending(f, forbidden) for f in files}
    assert not {k: v for k, v in bad.items() if v}


def test_the_scan_sees_relative_and_lazy_imports():
    source = 'def f():\n    from ..models import engine\n    import basicsr_ext.losses.aesop_loss\n'
    names = imported_modules(source, ['basicsr_ext', 'data'])
    assert {'basicsr_ext.models', 'basicsr_ext.models.engine', 'basicsr_ext.losses.aesop_loss'} <= names


def test_engine_and_validation_do_not_import_the_aesop_metric():
    for name in ('engine.py', 'validation.py'):
        assert not offending(PACKAGE / 'models' / name, ('basicsr_ext.metrics.fidelity_metric',
                                                         'basicsr_ext.losses')), name
