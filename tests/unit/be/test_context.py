"""The BE root a command works on (beadm.bectx): found from the running root or --root,
refused when it is no BE root, and the error without ZFS installed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from beadm.errors import NotFoundError, RefusedError, UnsupportedError, UsageError
from worlds.fakes import FakeRunner
from worlds.pool import MOUNTINFO, manager, row

R = "rpool/ROOT"


def test_no_zfs_root(tmp_path: Path) -> None:
    mgr, _, _ = manager(tmp_path, mountinfo="1 0 8:1 / / rw - ext4 /dev/vda rw\n")
    with pytest.raises(UnsupportedError):
        mgr.listing()


def test_root_override_must_exist(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path, root="tank/nothing")
    runner.fail("zfs", "list", "-H", "-o", "name", "tank/nothing")
    with pytest.raises(NotFoundError):
        mgr.listing()


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
