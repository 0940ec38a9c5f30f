"""Proof that the lab VM is real: OpenZFS kernel module and tools, a zpool on the blank disks,
FAT32 ESPs mounted, written and read back, beadm from the checkout on PATH."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path


def test_zfs_versions(sh: Callable[..., str]) -> None:
    out = sh("zfs", "version")
    print(out)
    assert "zfs-2." in out
    assert "zfs-kmod-2." in out
    assert Path("/sys/module/zfs/version").read_text().strip()
    print(sh("zpool", "version"))


def test_zpool_on_blank_disks(sh: Callable[..., str], pool_disks: list[Path],
                              tmp_path: Path) -> None:
    assert len(pool_disks) >= 2, "lab run gives two blank disks by default"
    sh("zpool", "create", "-f", "-o", "cachefile=none", "-O", "mountpoint=none", "labsmoke",
       "mirror", str(pool_disks[0]), str(pool_disks[1]))
    try:
        sh("zfs", "create", "-o", f"mountpoint={tmp_path}/ds", "labsmoke/ds")
        (tmp_path / "ds" / "hello").write_text("real zfs\n")
        sh("zfs", "snapshot", "labsmoke/ds@one")
        sh("zfs", "clone", "-o", "mountpoint=none", "labsmoke/ds@one", "labsmoke/clone")
        assert sh("zfs", "get", "-H", "-o", "value", "origin", "labsmoke/clone").strip() \
            == "labsmoke/ds@one"
        assert "ONLINE" in sh("zpool", "list", "-H", "-o", "health", "labsmoke")
        status = sh("zpool", "status", "labsmoke")
        print(status)
        assert "mirror-0" in status
        assert (tmp_path / "ds" / "hello").read_text() == "real zfs\n"
    finally:
        sh("zpool", "destroy", "-f", "labsmoke")
    assert "labsmoke" not in sh("zpool", "list", "-H", "-o", "name")


def test_vfat_esps_written_and_read_back(sh: Callable[..., str], esps: list[tuple[Path, str]],
                                         tmp_path: Path) -> None:
    assert [volid for _, volid in esps] == ["1111-AAAA", "2222-BBBB"]
    for part, volid in esps:
        by_uuid = Path("/dev/disk/by-uuid") / volid
        assert by_uuid.resolve() == part.resolve()
        assert sh("blkid", "-o", "value", "-s", "TYPE", str(part)).strip() == "vfat"
        assert "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" in sh(
            "blkid", "-p", "-o", "value", "-s", "PART_ENTRY_TYPE", str(part)).lower()
        mnt = tmp_path / volid
        mnt.mkdir()
        sh("mount", "-t", "vfat", str(by_uuid), str(mnt))
        try:
            # other lab tests in the same VM may have written to these ESPs already
            (mnt / "loader" / "entries").mkdir(parents=True, exist_ok=True)
            (mnt / "loader" / "entries" / "smoke.conf").write_text(f"title {volid}\n")
        finally:
            sh("umount", str(mnt))
        assert not (mnt / "loader").exists()
        sh("mount", "-t", "vfat", "-o", "ro", str(part), str(mnt))
        try:
            assert (mnt / "loader" / "entries" / "smoke.conf").read_text() == f"title {volid}\n"
        finally:
            sh("umount", str(mnt))


def test_beadm_runs_from_the_checkout() -> None:
    assert shutil.which("beadm") == "/usr/local/sbin/beadm"
    out = subprocess.run(["python3", "-c", "import beadm; print(beadm.__file__)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("/src/src/beadm/")
