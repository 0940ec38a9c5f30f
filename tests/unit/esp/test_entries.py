"""Boot entries (beadm.esp.entries): file names, rendering and parsing, the BE an entry id names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from beadm.esp import entries

NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)


def test_entry_filename_is_lowercase_id() -> None:
    assert entries.entry_filename("PVE-2", "6.8.12-1-pve") == "beadm-pve-2-6.8.12-1-pve.conf"


@given(be=NAME, kver=st.from_regex(r"[0-9][0-9a-z.+-]{0,15}", fullmatch=True),
       title=TEXT, options=TEXT)
def test_entry_render_parse_roundtrip(be: str, kver: str, title: str, options: str) -> None:
    e = entries.Entry(title=title, version=kver, options=options, linux="/beadm/a",
                      initrd=("/beadm/b",), be=be)
    assert entries.parse(e.render()) == e


def test_be_of_id_longest_name_wins_and_counters() -> None:
    names = ["test", "test-2", "Mixed"]
    assert entries.be_of_id("beadm-test-2-6.1.0-1-pve.conf", names) == "test-2"
    assert entries.be_of_id("beadm-test-6.1.0-1-pve.conf", names) == "test"
    assert entries.be_of_id("beadm-test-6.1.0-1-pve+1-2.conf", names) == "test"
    assert entries.be_of_id("beadm-mixed-6.1.conf", names) == "Mixed"
    assert entries.be_of_id("proxmox-6.1.conf", names) is None
    assert entries.be_of_id("beadm-other-6.1.conf", names) is None


def test_be_of_id_case_variants_and_prefixes() -> None:
    """Issue 10.11: ``Pve-2`` must not take the entries of ``pve-2``; ``pve`` never takes
    those of ``pve-2`` (its kernel version would have to be ``2-6.1.0-5-amd64``)."""
    eid = "beadm-pve-2-6.1.0-5-amd64.conf"
    assert entries.be_of_id(eid, ["Pve-2", "pve-2"]) == "pve-2"
    assert entries.be_of_id(eid, ["pve-2", "Pve-2"]) == "pve-2"
    assert entries.bes_of_id(eid, ["PVE-2", "Pve-2", "pve-2", "pve"]) == ["pve-2", "PVE-2",
                                                                         "Pve-2"]
    assert entries.be_of_id(eid, ["pve", "pve-2"]) == "pve-2"
    assert entries.be_of_id(eid, ["pve-2", "pve"]) == "pve-2"
    assert entries.be_of_id(eid, ["pve", "PVE-2"]) == "PVE-2"
    assert entries.be_of_id(eid, ["pve"]) == "pve"  # (a kernel "2-6.1.0-5-amd64")
    assert entries.be_of_id("beadm-pve-2-6.1.0-5-amd64+2-1.conf", ["Pve-2", "pve-2"]) == "pve-2"


def test_root_dataset_last_root_wins() -> None:
    e = entries.Entry(options="root=ZFS=rpool/ROOT/a boot=zfs root=ZFS=rpool/ROOT/b")
    assert e.root_dataset() == "rpool/ROOT/b"
