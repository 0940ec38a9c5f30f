"""Parsers and the library against output captured from real OpenZFS 2.1 in the lab VM
(pool imported with altroot /mnt/lab; see tests/lab/test_lifecycle.py::test_capture...)."""

from __future__ import annotations

from pathlib import Path

from beadm.zfs import parse_get, parse_list
from worlds.fakes import pool_props
from worlds.pool import FIXTURES, manager

LIST = (FIXTURES / "zfs_list_altroot.captured.txt").read_text()
GET = (FIXTURES / "zfs_get_local.captured.txt").read_text()


def test_parse_captured_list() -> None:
    items = {d.name: d for d in parse_list(LIST)}
    assert len(items) == 9
    snap = items["rpool/ROOT/pve-1@manual"]
    assert snap.clones == () and snap.mountpoint == "" and snap.state == ""
    beadm_snap = next(d for n, d in items.items() if n.startswith("rpool/ROOT/pve-1@beadm-"))
    assert beadm_snap.clones == ("rpool/ROOT/pve-2",)
    pve2 = items["rpool/ROOT/pve-2"]
    assert pve2.origin == beadm_snap.name
    assert pve2.description == "captured"
    assert pve2.mountpoint == "/mnt/lab" and pve2.canmount == "noauto"
    assert items["rpool/ROOT"].canmount == "off"


def test_parse_captured_get() -> None:
    props = parse_get(GET)
    assert ("rpool/ROOT/pve-1", "mountpoint", "/mnt/lab", "local") in [
        (p.dataset, p.prop, p.value, p.source) for p in props
    ]


def test_listing_and_create_on_captured_output(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path, listing=LIST, mountinfo="", root="rpool/ROOT")
    runner.on("zfs", "get", "-H", "-p", "-o", "name,property,value,source", stdout=GET)
    runner.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-1", altroot="/mnt/lab"))
    lst = mgr.listing()
    assert [(i.be.name, i.active) for i in lst.bes] == [("pve-1", "R"), ("pve-2", "-")]
    assert [s.snapname for s in lst.bes[0].be.snapshots][-1] == "manual"
    mgr.create("pve-3")
    clones = [c for c in runner.changes if c[:2] == ("zfs", "clone")]
    assert clones[0][2:8] == (
        "-o",
        "mountpoint=/",
        "-o",
        "com.example:site=lab",
        "-o",
        "canmount=noauto",
    )
    assert clones[1][2:6] == ("-o", "compression=zstd", "-o", "canmount=noauto")
