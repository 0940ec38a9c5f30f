"""beadm rename (beadm.rename): the dataset and bootfs follow, refusals before any change,
the backend's check and undo, a killed rename finished by the next command."""

from __future__ import annotations

from pathlib import Path

import pytest

from beadm.backend import BeRef
from beadm.errors import BootError, ExistsError, InvalidNameError, RefusedError
from worlds.fakes import RecordingBackend
from worlds.pool import manager, row

R = "rpool/ROOT"


def test_rename(tmp_path: Path) -> None:
    mgr, runner, backend = manager(tmp_path)
    new = mgr.rename("pve-2", "stable").be
    assert runner.changes == [
        ("zfs", "set", "org.beadm:state=renaming:pve-2", f"{R}/pve-2"),
        ("zfs", "rename", "-u", f"{R}/pve-2", f"{R}/stable"),
        ("zfs", "inherit", "org.beadm:state", f"{R}/stable"),
    ]
    assert backend.calls == [
        ("post_rename", BeRef("pve-2", f"{R}/pve-2", "before upgrade", False), new)
    ]
    with pytest.raises(RefusedError):
        mgr.rename("pve-1", "x")
    with pytest.raises(ExistsError):
        mgr.rename("pve-2", "pve-1")


def test_rename_bootfs_follows(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path, bootfs=f"{R}/pve-2")
    mgr.rename("pve-2", "stable")
    assert runner.changes[-2] == ("zpool", "set", f"bootfs={R}/stable", "rpool")


@pytest.mark.parametrize(
    ("new", "error"),
    [("PVE-1", ExistsError), ("Pve-1", ExistsError), ("a:b", InvalidNameError),
     ("a b", InvalidNameError), ("x" * 101, InvalidNameError)],
)
def test_rename_refused_before_any_change(tmp_path: Path, new: str, error: type) -> None:
    mgr, runner, backend = manager(tmp_path, bootfs=f"{R}/pve-2")
    with pytest.raises(error):
        mgr.rename("pve-2", new)
    assert runner.changes == [] and backend.calls == []


def test_rename_case_of_itself_is_allowed(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    mgr.rename("pve-2", "PVE-2")
    assert ("zfs", "rename", "-u", f"{R}/pve-2", f"{R}/PVE-2") in runner.changes


def test_rename_backend_check_runs_before_any_change(tmp_path: Path) -> None:
    class Checking(RecordingBackend):
        def check_rename(self, old: BeRef, new: BeRef) -> None:
            self.calls.append(("check_rename", old.name, new.name))
            raise BootError("ESP 1111-AAAA is full")

    mgr, runner, backend = manager(tmp_path, backend=Checking(), bootfs=f"{R}/pve-2")
    with pytest.raises(BootError, match="full"):
        mgr.rename("pve-2", "stable")
    assert runner.changes == []
    assert backend.calls == [("check_rename", "pve-2", "stable")]


def test_rename_backend_failure_undoes_everything(tmp_path: Path) -> None:
    backend = RecordingBackend(fail_on="post_rename")
    mgr, runner, _ = manager(tmp_path, backend=backend, bootfs=f"{R}/pve-2")
    with pytest.raises(BootError):
        mgr.rename("pve-2", "stable")
    assert runner.changes == [
        ("zfs", "set", "org.beadm:state=renaming:pve-2", f"{R}/pve-2"),
        ("zfs", "rename", "-u", f"{R}/pve-2", f"{R}/stable"),
        ("zpool", "set", f"bootfs={R}/stable", "rpool"),
        # undo, last step first; the backend puts back the old BE's entries
        ("zpool", "set", f"bootfs={R}/pve-2", "rpool"),
        ("zfs", "rename", "-u", f"{R}/stable", f"{R}/pve-2"),
        ("zfs", "inherit", "org.beadm:state", f"{R}/pve-2"),
    ]
    old = BeRef("pve-2", f"{R}/pve-2", "before upgrade", False)
    new = BeRef("stable", f"{R}/stable", "before upgrade", False)
    assert backend.calls == [("post_rename", old, new), ("post_rename", new, old)]


def test_killed_rename_is_finished_by_the_next_command(tmp_path: Path) -> None:
    """Killed after `zfs rename`: the ESPs (and the BE's cmdline) name the old dataset;
    bootfs too where it was set by name (OpenZFS itself keeps it on the renamed dataset,
    lab test_killed_rename_is_finished_by_the_next_command). The next changing command
    (here the kernel hook's sync) finishes the rename."""
    listing = "".join([
        row(R, canmount="off"),
        row(f"{R}/pve-1", mountpoint="/", mounted="yes", canmount="on"),
        row(f"{R}/stable", mountpoint="/", state="renaming:pve-2", description="d"),
    ])  # fmt: skip
    mgr, runner, backend = manager(tmp_path, listing=listing, bootfs=f"{R}/pve-2")
    mgr.sync(only_if_used=True)
    assert runner.changes == [
        ("zpool", "set", f"bootfs={R}/stable", "rpool"),
        ("zfs", "inherit", "org.beadm:state", f"{R}/stable"),
    ]
    assert backend.calls[0] == (
        "post_rename", BeRef("pve-2", f"{R}/pve-2", "d"), BeRef("stable", f"{R}/stable", "d")
    )
    assert backend.calls[1] == ("sync",)


def test_killed_rename_before_zfs_rename_only_clears_the_mark(tmp_path: Path) -> None:
    listing = "".join([
        row(R, canmount="off"),
        row(f"{R}/pve-1", mountpoint="/", mounted="yes", canmount="on"),
        row(f"{R}/pve-2", mountpoint="/", state="renaming:pve-2"),
    ])  # fmt: skip
    mgr, runner, backend = manager(tmp_path, listing=listing)
    mgr.sync()
    assert runner.changes == [("zfs", "inherit", "org.beadm:state", f"{R}/pve-2")]
    assert backend.calls == [("sync",)]
