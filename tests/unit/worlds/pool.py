"""Builds a BeManager over a FakeRunner answering with fixture zfs output."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from beadm.be import BeManager
from beadm.lock import Lock
from beadm.zfs import LIST_COLUMNS
from worlds import FIXTURES
from worlds.fakes import FakeRunner, RecordingBackend, pool_props

LIST_TEXT = (FIXTURES / "zfs_list_proxmox.handwritten.txt").read_text()
GET_TEXT = (FIXTURES / "zfs_get_local.handwritten.txt").read_text()
MOUNTINFO = (FIXTURES / "mountinfo_pve1.txt").read_text()
LIST_ARGV = ("zfs", "list", "-H", "-p", "-t", "filesystem,snapshot", "-o", ",".join(LIST_COLUMNS))
LIST_FS_ARGV = ("zfs", "list", "-H", "-p", "-t", "filesystem", "-o", ",".join(LIST_COLUMNS))
NOW = dt.datetime(2026, 11, 26, 12, 0, 0)
SNAP = "beadm-20261126-120000"


def without_snapshots(listing: str) -> str:
    """What ``zfs list -t filesystem`` prints for the same tree."""
    return "".join(line for line in listing.splitlines(keepends=True)
                   if "@" not in line.split("\t", 1)[0])


def row(name: str, **kw: Any) -> str:
    """One zfs list line in LIST_COLUMNS order; unspecified columns are '-'."""
    snap = "@" in name
    vals = {
        "name": name,
        "type": "snapshot" if snap else "filesystem",
        "used": "1024",
        "usedbysnapshots": "-" if snap else "0",
        "creation": "1763200000",
        "createtxg": "100",
        "mountpoint": "-",
        "mounted": "-" if snap else "no",
        "canmount": "-" if snap else "noauto",
        "origin": "-",
        "clones": "" if snap else "-",
        "org.beadm:state": "-",
        "org.beadm:description": "-",
    }
    alias = {"state": "org.beadm:state", "description": "org.beadm:description"}
    vals.update({alias.get(k, k): v for k, v in kw.items()})
    return "\t".join(vals[c] for c in LIST_COLUMNS) + "\n"


def manager(
    tmp_path: Path,
    *,
    runner: FakeRunner | None = None,
    listing: str = LIST_TEXT,
    bootfs: str = "rpool/ROOT/pve-1",
    mountinfo: str = MOUNTINFO,
    backend: Any = None,
    root: str | None = None,
) -> tuple[BeManager, FakeRunner, RecordingBackend]:
    runner = runner if runner is not None else FakeRunner()
    runner.on(*LIST_ARGV, stdout=listing)
    runner.on(*LIST_FS_ARGV, stdout=without_snapshots(listing))
    runner.on("zpool", "get", stdout=pool_props(bootfs))
    runner.on("zfs", "get", "-H", "-p", "-o", "name,property,value,source", stdout=GET_TEXT)
    mi = tmp_path / "mountinfo"
    mi.write_text(mountinfo)
    backend = backend if backend is not None else RecordingBackend()
    mgr = BeManager(
        runner,
        backend,
        root=root,
        mountinfo=mi,
        lock=Lock(tmp_path / "lock", 0.2),
        clock=lambda: NOW,
    )
    return mgr, runner, backend
