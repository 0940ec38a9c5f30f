from __future__ import annotations

import sys

import pytest

from beadm.runner import SubprocessRunner
from beadm.zfs import parse_get, parse_list
from worlds.pool import GET_TEXT, LIST_TEXT, row


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


ODD = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"]


@pytest.mark.parametrize("ch", ODD)
def test_description_with_line_breaking_characters_stays_one_dataset(ch: str) -> None:
    text = row("rpool/ROOT/x", description=f"a{ch}b") + row("rpool/ROOT/y")
    assert [(d.name, d.description) for d in parse_list(text)] == [
        ("rpool/ROOT/x", f"a{ch}b"),
        ("rpool/ROOT/y", ""),
    ]


def test_description_with_newline_set_by_hand_continues_the_record() -> None:
    text = row("rpool/ROOT/x", description="first\nsecond\tpart") + row("rpool/ROOT/y")
    assert [(d.name, d.description) for d in parse_list(text)] == [
        ("rpool/ROOT/x", "first\nsecond\tpart"),
        ("rpool/ROOT/y", ""),
    ]


@pytest.mark.parametrize("ch", ODD)
def test_parse_get_value_with_line_breaking_characters(ch: str) -> None:
    text = f"rpool/ROOT/x\tcom.example:y\ta{ch}b\tlocal\nrpool/ROOT/x\tatime\toff\tlocal\n"
    assert [(p.prop, p.value, p.source) for p in parse_get(text)] == [
        ("com.example:y", f"a{ch}b", "local"),
        ("atime", "off", "local"),
    ]


def test_runner_keeps_non_utf8_output() -> None:
    """Bytes that are not UTF-8 (a description set by hand) neither crash the runner nor
    get lost: they come back as lone surrogates, which go out again as the same bytes."""
    code = "import sys; sys.stdout.buffer.write(b'a\\xffb\\n'); sys.stderr.buffer.write(b'\\xfe')"
    res = SubprocessRunner().run([sys.executable, "-c", code], readonly=True)
    assert res.stdout == "a\udcffb\n"
    assert res.stderr == "\udcfe"


def test_pool_props_reads_several_properties_with_one_zpool_get() -> None:
    from beadm.zfs import Zfs
    from worlds.fakes import FakeRunner

    r = FakeRunner()
    r.on("zpool", "get", stdout="bootfs\trpool/ROOT/pve-1\naltroot\t-\n")
    assert Zfs(r).pool_props("rpool", ("bootfs", "altroot")) == {
        "bootfs": "rpool/ROOT/pve-1", "altroot": ""}
    assert r.calls == [("zpool", "get", "-H", "-p", "-o", "property,value", "bootfs,altroot",
                        "rpool")]
    r.on("zpool", "get", stdout="bootfs\t-\n")
    with pytest.raises(ValueError, match="did not print altroot"):
        Zfs(r).pool_props("rpool", ("bootfs", "altroot"))
