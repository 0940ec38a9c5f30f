"""Issue 15: the backend's session is held for a whole command, in a private mount
namespace; every command that must run in the host's namespace releases it first."""

from __future__ import annotations

from pathlib import Path

import pytest

from beadm.backend import BootState
from beadm.be import _HostNsRunner, _needs_host_ns
from worlds.fakes import FakeRunner, RecordingBackend
from worlds.pool import manager


@pytest.mark.parametrize(("argv", "host"), [
    (("mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/pve-2", "/mnt"), True),
    (("umount", "/mnt"), True),
    (("zfs", "destroy", "-r", "rpool/ROOT/pve-2"), True),
    (("zfs", "rename", "-u", "rpool/ROOT/a", "rpool/ROOT/b"), True),
    (("zfs", "promote", "rpool/ROOT/b"), True),
    (("zfs", "create", "-o", "mountpoint=/var/lib/vz", "rpool/var-lib-vz"), True),
    (("zfs", "set", "mountpoint=/x", "rpool/x"), True),
    (("zfs", "set", "canmount=off", "rpool/x"), True),
    (("proxmox-boot-tool", "refresh"), True),
    (("systemctl", "stop", "pve-cluster"), True),
    (("zfs", "set", "canmount=noauto", "rpool/ROOT/pve-1"), False),
    (("zfs", "set", "org.beadm:state=renaming:a", "rpool/ROOT/a"), False),
    (("zfs", "inherit", "org.beadm:state", "rpool/ROOT/a"), False),
    (("zfs", "snapshot", "-r", "rpool/ROOT/pve-1@x"), False),
    (("zfs", "clone", "-o", "canmount=noauto", "rpool/ROOT/pve-1@x", "rpool/ROOT/b"), False),
    (("zpool", "set", "bootfs=rpool/ROOT/b", "rpool"), False),
])
def test_which_commands_need_the_hosts_namespace(argv: tuple[str, ...], host: bool) -> None:
    assert _needs_host_ns(argv) is host


def test_released_before_each_such_command_not_before_queries_or_others() -> None:
    inner = FakeRunner()
    log: list[str] = []
    r = _HostNsRunner(inner, lambda: log.append("release"))
    r.run(["zfs", "list", "-H", "rpool"], readonly=True)
    r.run(["mount", "-t", "zfs", "-o", "ro,zfsutil", "rpool/ROOT/x", "/tmp/x"], readonly=True)
    r.run(["zfs", "inherit", "org.beadm:state", "rpool/ROOT/x"])
    assert log == []
    r.run(["zfs", "destroy", "rpool/ROOT/x"])
    assert log == ["release"]
    assert [c[:2] for c in inner.calls] == [("zfs", "list"), ("mount", "-t"), ("zfs", "inherit"),
                                            ("zfs", "destroy")]
    assert r.dry_run is False


# -- external commands per command (fake runner) -------------------------------------


def test_list_runs_one_zfs_list_and_asks_bootfs_only_where_it_decides(tmp_path: Path) -> None:
    """``beadm list``: one ``zfs list``; the pool's bootfs only when the backend does not
    say what boots next (or for --json, which prints it)."""
    decided = RecordingBackend(state=BootState(next_boot="pve-2"))
    mgr, runner, _ = manager(tmp_path, backend=decided)
    lst = mgr.listing(snapshots=False, bootfs=False)
    assert [i.active for i in lst.bes] == ["N", "R"] and lst.bootfs is None
    assert [c[:2] for c in runner.calls] == [("zfs", "list")]
    mgr, runner, _ = manager(tmp_path)  # the backend does not decide: bootfs does
    lst = mgr.listing(snapshots=False, bootfs=False)
    assert [i.active for i in lst.bes] == ["NR", "-"] and lst.bootfs == "rpool/ROOT/pve-1"
    assert [c[:2] for c in runner.calls] == [("zfs", "list"), ("zpool", "get")]
    mgr, runner, _ = manager(tmp_path, backend=decided)
    assert mgr.listing().bootfs == "rpool/ROOT/pve-1"  # asked for (--json)


def test_create_asks_the_pools_altroot_once(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    mgr.create("pve-3")
    asked = [c for c in runner.calls if c[:2] == ("zpool", "get")]
    assert [c[-2] for c in asked] == ["bootfs,altroot"]
    kinds = [" ".join(c[:2]) for c in runner.calls]
    assert kinds == ["zfs list", "zfs get", "zpool get", "zfs snapshot", "zfs clone",
                     "zfs clone", "zfs list", "zfs inherit"], kinds


def test_activate_reads_the_pool_once_and_again_after_changing_bootfs(tmp_path: Path) -> None:
    """Issue 15: altroot (the shared-state check) and bootfs (before moving it) come from
    one ``zpool get``; after beadm set bootfs, the next question asks the pool again."""
    mgr, runner, _ = manager(tmp_path)
    mgr.activate("pve-2")
    kinds = [" ".join(c[:3]) for c in runner.calls if c[0] == "zpool"]
    assert kinds == ["zpool get -H", "zpool set bootfs=rpool/ROOT/pve-2"], kinds
    assert mgr._bootfs() == "rpool/ROOT/pve-1"  # the fake pool's answer, asked again
    assert [" ".join(c[:2]) for c in runner.calls if c[0] == "zpool"][-1] == "zpool get"
    assert len([c for c in runner.calls if c[:2] == ("zpool", "get")]) == 2


def test_a_bootfs_read_with_altroot_does_not_outlive_its_command(tmp_path: Path) -> None:
    """A library user keeps one BeManager across commands; bootfs changed in between (by
    another beadm process) is seen: only altroot, fixed while the pool is imported, is kept
    from the zpool get that read both."""
    from worlds.fakes import pool_props

    mgr, runner, _ = manager(tmp_path)
    mgr.create("pve-3")  # reads altroot (and bootfs with it), never asks for bootfs
    runner.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-2"))
    assert mgr.listing().bootfs == "rpool/ROOT/pve-2"
