"""beadm activate and init (beadm.activate): bootfs and canmount, -t, the undo on a backend
failure, init's default and name check, migrate."""

from __future__ import annotations

from pathlib import Path

import pytest

from beadm.errors import BootError, InvalidNameError, UnsupportedError
from worlds.fakes import RecordingBackend
from worlds.pool import manager, row

R = "rpool/ROOT"


def test_activate(tmp_path: Path) -> None:
    listing = "".join(
        [
            row(R, canmount="off"),
            row(f"{R}/pve-1", mountpoint="/", mounted="yes", canmount="on"),
            row(f"{R}/pve-2", mountpoint="/", canmount="on"),
            row(f"{R}/pve-2/var", mountpoint="/var", canmount="on"),
            row(f"{R}/pve-3", mountpoint="/", canmount="noauto"),
        ]
    )
    mgr, runner, backend = manager(tmp_path, listing=listing)
    ref = mgr.activate("pve-3").be
    assert runner.changes == [
        ("zpool", "set", f"bootfs={R}/pve-3", "rpool"),
        # the running BE too: booted as another BE, `zfs mount -a` would mount it over /
        ("zfs", "set", "canmount=noauto", f"{R}/pve-1"),
        ("zfs", "set", "canmount=noauto", f"{R}/pve-2"),
        ("zfs", "set", "canmount=noauto", f"{R}/pve-2/var"),
    ]
    assert backend.calls == [("activate", ref, False)]


def test_activate_temporary_keeps_bootfs(tmp_path: Path) -> None:
    mgr, runner, backend = manager(tmp_path)
    mgr.activate("pve-2", temporary=True)
    assert not any(c[:2] == ("zpool", "set") for c in runner.changes)
    assert backend.calls[0][2] is True


def test_init_defaults_to_running(tmp_path: Path) -> None:
    mgr, runner, backend = manager(tmp_path)
    ref = mgr.init().be
    assert ref is not None
    assert ref.name == "pve-1" and ref.running
    assert backend.calls == [("init", ref)]
    assert runner.changes == []


def test_migrate_unsupported_by_noop(tmp_path: Path) -> None:
    mgr, _, _ = manager(tmp_path)
    with pytest.raises(UnsupportedError):
        mgr.migrate()


def test_activate_backend_failure_restores_bootfs_and_canmount(tmp_path: Path) -> None:
    listing = "".join([
        row(R, canmount="off"),
        row(f"{R}/pve-1", mountpoint="/", mounted="yes", canmount="on"),
        row(f"{R}/pve-2", mountpoint="/", canmount="noauto"),
    ])  # fmt: skip
    backend = RecordingBackend(fail_on="activate")
    mgr, runner, _ = manager(tmp_path, listing=listing, backend=backend)
    with pytest.raises(BootError):
        mgr.activate("pve-2")
    assert runner.changes == [
        ("zpool", "set", f"bootfs={R}/pve-2", "rpool"),
        ("zfs", "set", "canmount=noauto", f"{R}/pve-1"),
        ("zfs", "set", "canmount=on", f"{R}/pve-1"),
        ("zpool", "set", f"bootfs={R}/pve-1", "rpool"),
    ]


def test_init_refuses_a_name_fat_cannot_hold_but_other_commands_take_it(tmp_path: Path) -> None:
    listing = "".join([
        row(R, canmount="off"),
        row(f"{R}/pve-1", mountpoint="/", mounted="yes", canmount="on"),
        row(f"{R}/a:b", mountpoint="/"),
    ])  # fmt: skip
    mgr, runner, backend = manager(tmp_path, listing=listing)
    with pytest.raises(InvalidNameError, match="FAT"):
        mgr.init("a:b")
    assert backend.calls == [] and runner.changes == []
    assert [i.be.name for i in mgr.listing().bes] == ["a:b", "pve-1"]
    mgr.rename("a:b", "a-b")  # the way out
    assert ("zfs", "rename", "-u", f"{R}/a:b", f"{R}/a-b") in runner.changes
