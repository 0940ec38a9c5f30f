from __future__ import annotations

import time
from pathlib import Path

import pytest
from world import MOUNTINFO

from beadm.errors import LockedError
from beadm.lock import Lock
from beadm.mounts import parse_mountinfo, root_dataset, zfs_mounts


def test_mountinfo() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert root_dataset(mounts) == "rpool/ROOT/pve-1"
    assert zfs_mounts(mounts)["rpool/ROOT/pve-1/var"] == ["/var"]
    assert mounts[-1].mountpoint == "/mnt/with space"


def test_root_not_zfs() -> None:
    text = "1 0 8:1 / / rw - ext4 /dev/vda rw\n"
    assert root_dataset(parse_mountinfo(text)) is None


def test_lock_times_out(tmp_path: Path) -> None:
    with Lock(tmp_path / "l", 0.1):
        start = time.monotonic()
        with pytest.raises(LockedError) as exc, Lock(tmp_path / "l", 0.3):
            pass
        assert time.monotonic() - start >= 0.3
        assert "another beadm" in str(exc.value)
    with Lock(tmp_path / "l", 0.1):
        pass
