"""The modules of beadm import each other in one direction (ARCHITECTURE.md, the layers): no
circle, counting every import (at the top, under TYPE_CHECKING, inside a function), and the
context the verbs run over (beadm.bectx) knows none of them."""

from __future__ import annotations

import ast
from pathlib import Path

from worlds import REPO

SRC = REPO / "src"
PKG = SRC / "beadm"
#: The modules of one verb each (ARCHITECTURE.md, "one module per verb").
VERBS = ("create", "destroy", "rename", "activate", "trialboot", "mountbe", "listing",
         "prune", "shared", "upgrade", "recovery")


def _name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The beadm modules that ``path`` imports anywhere in it (``from beadm import x``
    names module ``beadm.x`` where that is one, else the package)."""
    here = _name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in known:
                    out.add(sub)
                elif base in known:
                    out.add(base)
    out.discard(here)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group: list[str] = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_is_read() -> None:
    edges = graph()
    assert "beadm.zfs" in edges["beadm.bectx"]  # at the top
    assert "beadm.bectx" in edges["beadm.create"]  # under TYPE_CHECKING
    assert "beadm.upgrade" in edges["beadm.be"]  # inside a function
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back_through_others() -> None:
    assert circles(graph()) == []


def test_the_context_imports_no_verb() -> None:
    verbs = {f"beadm.{v}" for v in VERBS}
    assert verbs <= set(graph())
    assert graph()["beadm.bectx"] & verbs == set()
    assert graph()["beadm.results"] & verbs == set()


def test_activate_without_shared_state_in_service_imports_none_of_its_moving_parts(
        tmp_path: Path) -> None:
    """``activate`` asks which shared datasets are in service (beadm.pvestate); the drop-ins
    (beadm.statedropins), the move and its copy are imported only where they are used.
    In a fresh interpreter: this test process has imported them all already."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        f"sys.path[:0] = [{str(SRC)!r}, {str(REPO / 'tests' / 'unit')!r}]\n"
        "from pathlib import Path\n"
        "from worlds.pool import manager\n"
        f"mgr, runner, _ = manager(Path({str(tmp_path)!r}))\n"
        "mgr.activate('pve-2')\n"
        "assert any(c[:2] == ('zpool', 'set') for c in runner.calls), runner.calls\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('beadm.'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert {"beadm.activate", "beadm.shared", "beadm.pvestate"} <= loaded
    assert loaded & {"beadm.statedropins", "beadm.statemove", "beadm.stateservices",
                     "beadm.statecopy"} == set()
