"""mountinfo (beadm.mounts): the mounts and the root dataset read from it."""

from __future__ import annotations

from beadm.mounts import parse_mountinfo, root_dataset, zfs_mounts
from worlds.pool import MOUNTINFO


def test_mountinfo() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert root_dataset(mounts) == "rpool/ROOT/pve-1"
    assert zfs_mounts(mounts)["rpool/ROOT/pve-1/var"] == ["/var"]
    assert mounts[-1].mountpoint == "/mnt/with space"


def test_root_not_zfs() -> None:
    text = "1 0 8:1 / / rw - ext4 /dev/vda rw\n"
    assert root_dataset(parse_mountinfo(text)) is None
