"""What a command returns: its result with the warnings that did not stop it (the boot
backend's hooks return them; nothing is left on the backend for a later call to read),
and the library's public face, ``beadm.open()``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import beadm
from beadm import results
from beadm.backend import BeRef, NoopBackend
from worlds import REPO
from worlds.cli import run
from worlds.fakes import WarningBackend
from worlds.pool import manager

SRC = REPO / "src"


def test_each_command_returns_its_own_warnings(tmp_path: Path) -> None:
    mgr, _runner, _backend = manager(tmp_path, backend=WarningBackend())
    done = mgr.activate("pve-2")
    assert done == results.Done("pve-2", BeRef("pve-2", "rpool/ROOT/pve-2", "before upgrade"),
                                ("activate #1",))
    # the next command starts without the last one's
    assert mgr.rename("pve-2", "stable").warnings == ("post_rename #2",)
    assert mgr.sync().warnings == ("sync #3",)


def test_a_failed_command_leaves_no_warnings_for_the_next(tmp_path: Path) -> None:
    class FailsAfterWarning(WarningBackend):
        def activate(self, be: object, *, temporary: bool) -> tuple[str, ...]:
            self._hook("activate", be, temporary)
            raise beadm.BootError("no ESP")

    mgr, _runner, _backend = manager(tmp_path, backend=FailsAfterWarning())
    with pytest.raises(beadm.BootError):
        mgr.activate("pve-2")
    (tmp_path / "mnt").mkdir()
    assert mgr.mount("pve-2", str(tmp_path / "mnt")).warnings == ()


def test_the_cli_prints_the_results_warnings_once(tmp_path: Path) -> None:
    rc, _out, err, _runner = run(tmp_path, "activate", "pve-2", backend=WarningBackend())
    assert rc == 0
    assert err == "beadm: warning: activate #1\n"


def test_open_gives_a_manager_and_releases_the_backend_on_leaving(
        monkeypatch: pytest.MonkeyPatch) -> None:
    released: list[str] = []
    monkeypatch.setattr(NoopBackend, "release", lambda self: released.append(self.name))
    with beadm.open(backend="none", root="rpool/ROOT", dry_run=True) as bes:
        assert isinstance(bes, beadm.BeManager)
        assert bes.backend.name == "none" and bes.runner.dry_run
        assert released == []
    assert released == ["none"]


def test_the_public_names_are_imported_when_first_used() -> None:
    assert beadm.Done is results.Done
    assert issubclass(beadm.NotFoundError, beadm.BeadmError)
    with pytest.raises(AttributeError):
        beadm.no_such_name  # noqa: B018
    code = ("import sys; import beadm; "
            "print(sorted(m for m in sys.modules if m.startswith('beadm.')))")
    got = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, "
                          f"{str(SRC)!r}); {code}"], capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "[]"  # `beadm version` pays for none of them
    code = ("import sys; before = set(sys.modules); import beadm; "
            "print(sorted(set(sys.modules) - before))")
    got = subprocess.run([sys.executable, "-IS", "-c", f"import sys; sys.path.insert(0, "
                          f"{str(SRC)!r}); {code}"], capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "['beadm']"  # nor typing (re), contextlib, importlib
