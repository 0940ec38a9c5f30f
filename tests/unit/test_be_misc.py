from __future__ import annotations

from pathlib import Path

import pytest
from fakes import RecordingBackend
from world import manager, row

from beadm.backend import BeRef, BootState
from beadm.errors import ExistsError, NotFoundError, RefusedError, UnsupportedError

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
    assert runner.changes == [("zfs", "rename", "-u", f"{R}/pve-2", f"{R}/stable")]
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
    assert runner.changes[-1] == ("zpool", "set", f"bootfs={R}/stable", "rpool")


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
