"""beadm mount and umount (beadm.mountbe): where a BE is mounted, what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from beadm.errors import NotFoundError, RefusedError
from worlds.pool import MOUNTINFO, manager

R = "rpool/ROOT"


def test_mount_and_umount(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    where = tmp_path / "mnt"
    where.mkdir()
    assert mgr.mount("pve-2", str(where)).what == str(where)
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
    d = mgr.mount("pve-2").what
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
