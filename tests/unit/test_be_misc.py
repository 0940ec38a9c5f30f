from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from fakes import FakeRunner, RecordingBackend
from world import MOUNTINFO, manager, row

from beadm.backend import BeRef, BootState
from beadm.errors import (
    BootError,
    ExistsError,
    InvalidNameError,
    NotFoundError,
    RefusedError,
    UnsupportedError,
    UsageError,
)

R = "rpool/ROOT"


def test_listing_flags(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    lst = mgr.listing()
    assert [(i.be.name, i.active, i.mounted_at) for i in lst.bes] == [
        ("pve-1", "NR", "/"),
        ("pve-2", "-", None),
    ]
    assert lst.bes[1].be.description == "before upgrade"
    lists = [c for c in runner.calls if c[:2] == ("zfs", "list")]
    assert len(lists) == 1


def test_listing_backend_next_boot_and_once(tmp_path: Path) -> None:
    backend = RecordingBackend(state=BootState(next_boot="pve-2", once="pve-2"))
    mgr, _, _ = manager(tmp_path, backend=backend)
    assert [i.active for i in mgr.listing().bes] == ["N", "RT"]


def test_no_zfs_root(tmp_path: Path) -> None:
    mgr, _, _ = manager(tmp_path, mountinfo="1 0 8:1 / / rw - ext4 /dev/vda rw\n")
    with pytest.raises(UnsupportedError):
        mgr.listing()


def test_root_override_must_exist(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path, root="tank/nothing")
    runner.fail("zfs", "list", "-H", "-o", "name", "tank/nothing")
    with pytest.raises(NotFoundError):
        mgr.listing()


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
    ref = mgr.activate("pve-3")
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


def test_rename(tmp_path: Path) -> None:
    mgr, runner, backend = manager(tmp_path)
    new = mgr.rename("pve-2", "stable")
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


def test_mount_and_umount(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    where = tmp_path / "mnt"
    where.mkdir()
    assert mgr.mount("pve-2", str(where)) == str(where)
    assert runner.changes == [
        ("mount", "-t", "zfs", "-o", "zfsutil", f"{R}/pve-2", str(where)),
        ("mount", "-t", "zfs", "-o", "zfsutil", f"{R}/pve-2/var", f"{where}/var"),
    ]
    mi = (tmp_path / "mountinfo").read_text()
    mi += f"30 22 0:30 / {where} rw - zfs {R}/pve-2 rw\n"
    mi += f"31 30 0:31 / {where}/var rw - zfs {R}/pve-2/var rw\n"
    (tmp_path / "mountinfo").write_text(mi)
    with pytest.raises(RefusedError, match="already mounted"):
        mgr.mount("pve-2")
    runner.changes.clear()
    mgr.umount(str(where), force=True)
    assert runner.changes == [("umount", "-f", f"{where}/var"), ("umount", "-f", str(where))]
    runner.changes.clear()
    mgr.umount("pve-2")
    assert runner.changes == [("umount", f"{where}/var"), ("umount", str(where))]


def test_mount_fresh_dir_and_refusals(tmp_path: Path) -> None:
    mgr, _runner, _ = manager(tmp_path)
    d = mgr.mount("pve-2")
    try:
        assert Path(d).is_dir()
        assert Path(d).name.startswith("beadm-")
    finally:
        (Path(d) / "var").rmdir()
        Path(d).rmdir()
    with pytest.raises(RefusedError):
        mgr.mount("pve-1")
    with pytest.raises(NotFoundError):
        mgr.mount("pve-2", str(tmp_path / "missing"))
    with pytest.raises(NotFoundError):
        mgr.umount("pve-2")
    with pytest.raises(RefusedError):
        mgr.umount("pve-1")


def test_init_defaults_to_running(tmp_path: Path) -> None:
    mgr, runner, backend = manager(tmp_path)
    ref = mgr.init()
    assert ref.name == "pve-1" and ref.running
    assert backend.calls == [("init", ref)]
    assert runner.changes == []


def test_migrate_unsupported_by_noop(tmp_path: Path) -> None:
    mgr, _, _ = manager(tmp_path)
    with pytest.raises(UnsupportedError):
        mgr.migrate()


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


def test_mount_refuses_mount_points_and_non_empty_directories(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "file").write_text("x")
    mi = MOUNTINFO + f"40 22 0:40 / {busy} rw - tmpfs tmpfs rw\n"
    mgr, runner, _ = manager(tmp_path, mountinfo=mi)
    for where, why in (("/", "mount point"), ("/var/..", "mount point"),
                       (str(busy), "mount point"), (str(full), "not empty")):
        with pytest.raises(RefusedError, match=why):
            mgr.mount("pve-2", where)
    assert runner.changes == []


def _sync_refused(tmp_path: Path, root: str, listing: str, error: type,
                  mountinfo: str = MOUNTINFO) -> None:
    mgr, runner, backend = manager(tmp_path, root=root, listing=listing, mountinfo=mountinfo)
    with pytest.raises(error):
        mgr.sync()
    assert runner.changes == [] and backend.calls == []


def test_root_that_is_a_pool_is_refused(tmp_path: Path) -> None:
    listing = row("rpool", mountpoint="/rpool") + row("rpool/ROOT", canmount="off")
    _sync_refused(tmp_path, "rpool", listing, UsageError)


def test_root_whose_children_are_not_root_file_systems_is_refused(tmp_path: Path) -> None:
    listing = "".join([
        row("rpool/top", mountpoint="/rpool/top"),
        row("rpool/top/ROOT", mountpoint="/rpool/top/ROOT", canmount="off"),
        row("rpool/top/ROOT/pve-1", mountpoint="/"),
        row("rpool/top/data", mountpoint="/rpool/top/data"),
    ])  # fmt: skip
    _sync_refused(tmp_path, "rpool/top", listing, RefusedError)
    _sync_refused(tmp_path, "rpool/top/ROOT/pve-1", row("rpool/top/ROOT/pve-1", mountpoint="/"),
                  NotFoundError)


def test_root_in_another_pool_than_the_running_be_is_refused(tmp_path: Path) -> None:
    listing = row("tank/ROOT", canmount="off") + row("tank/ROOT/x", mountpoint="/")
    _sync_refused(tmp_path, "tank/ROOT", listing, RefusedError)


def test_root_override_that_is_a_be_root_is_accepted(tmp_path: Path) -> None:
    mgr, _, backend = manager(tmp_path, root=R)
    mgr.sync()
    assert backend.calls == [("sync",)]


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


def test_without_zfs_installed_the_error_says_so_first(tmp_path: Path) -> None:
    """Issue 25.7: on a host without the zfs command (and so no ZFS root), the one error
    line names the missing command, not --root."""
    from beadm.errors import UnsupportedError
    from beadm.runner import Result

    class NoZfs(FakeRunner):
        def run(self, argv: Sequence[str], *, readonly: bool = False,
                check: bool = True, on_line: object = None) -> Result:
            if argv[0] in ("zfs", "zpool"):
                raise UnsupportedError(f"{argv[0]}: command not found")
            return super().run(argv, readonly=readonly, check=check)

    mgr, _, _ = manager(tmp_path, runner=NoZfs(),
                        mountinfo="22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")
    with pytest.raises(UnsupportedError, match="zfs: command not found"):
        mgr.listing()
    mgr, _, _ = manager(tmp_path, mountinfo="22 1 0:21 / / rw - ext4 /dev/sda1 rw\n")
    with pytest.raises(UnsupportedError, match="/ is not a ZFS dataset"):  # zfs is there
        mgr.listing()
