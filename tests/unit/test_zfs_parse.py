from __future__ import annotations

from world import GET_TEXT, LIST_TEXT, row

from beadm.zfs import parse_get, parse_list


def test_parse_list_fixture() -> None:
    items = parse_list(LIST_TEXT)
    by = {d.name: d for d in items}
    assert len(items) == 8
    pve1 = by["rpool/ROOT/pve-1"]
    assert pve1.type == "filesystem"
    assert pve1.used == 2147483648
    assert pve1.mountpoint == "/"
    assert pve1.mounted is True
    assert pve1.origin == ""
    assert pve1.description == ""
    snap = by["rpool/ROOT/pve-1@beadm-20261120-101010"]
    assert snap.is_snapshot
    assert snap.dataset == "rpool/ROOT/pve-1"
    assert snap.snapname == "beadm-20261120-101010"
    assert snap.clones == ("rpool/ROOT/pve-2",)
    assert snap.mountpoint == ""
    assert by["rpool/ROOT/pve-1@manual"].clones == ()
    pve2 = by["rpool/ROOT/pve-2"]
    assert pve2.origin == "rpool/ROOT/pve-1@beadm-20261120-101010"
    assert pve2.description == "before upgrade"
    assert pve2.canmount == "noauto"


def test_description_with_tab_stays_in_last_column() -> None:
    (d,) = parse_list(row("rpool/ROOT/x", description="a\tb"))
    assert d.description == "a\tb"


def test_parse_get_value_with_tab() -> None:
    props = parse_get(GET_TEXT)
    assert next((p.dataset, p.prop, p.source) for p in props) == (
        "rpool/ROOT/pve-1",
        "mountpoint",
        "local",
    )
    note = next(p for p in props if p.prop == "com.example:note")
    assert note.value == "a\tb"
    assert props[-1].source == "received"
