"""The tests' own layout (issue 24): unit tests by layer and verb, what tests share in helper
modules, never in a test module, and no test that edits ``sys.path`` (pyproject.toml's
``pythonpath`` makes src and tests/unit/worlds importable)."""

from __future__ import annotations

import ast
from pathlib import Path

from worlds import REPO

TESTS = REPO / "tests"
UNIT = TESTS / "unit"


def _python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "fixtures" not in p.relative_to(TESTS).parts)


def _imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_no_module_imports_a_test_module() -> None:
    wrong = [f"{p.relative_to(REPO)}: {name}" for p in _python_files()
             for name in _imported(ast.parse(p.read_text(encoding="utf-8")))
             if name.rpartition(".")[2].startswith("test_")]
    assert wrong == []


def test_no_test_edits_sys_path() -> None:
    wrong = []
    for p in _python_files():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "path" \
                    and isinstance(node.value, ast.Name) and node.value.id == "sys":
                wrong.append(f"{p.relative_to(REPO)}:{node.lineno}")
    assert wrong == []


def test_unit_tests_sit_in_a_layer_package_and_helpers_in_worlds() -> None:
    tests = sorted(UNIT.rglob("test_*.py"))
    assert tests
    flat = [str(p.relative_to(UNIT)) for p in tests if p.parent == UNIT]
    deep = [str(p.relative_to(UNIT)) for p in tests if len(p.relative_to(UNIT).parts) > 2]
    in_worlds = [str(p.relative_to(UNIT)) for p in tests if p.parent.name == "worlds"]
    not_package = sorted({p.parent.name for p in tests if not (p.parent / "__init__.py").is_file()})
    assert (flat, deep, in_worlds, not_package) == ([], [], [], [])
    helpers = [p.name for p in UNIT.glob("*.py") if p.name != "conftest.py"]
    assert helpers == [], "helpers belong in tests/unit/worlds"
    assert [p.relative_to(UNIT) for p in UNIT.rglob("conftest.py")] == [Path("conftest.py")]
