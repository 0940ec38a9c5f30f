"""PVE 9's ``memtest86+x64.efi.conf`` entry (``proxmox-boot-tool init`` of
proxmox-kernel-helper 9.2 writes it): an ``efi`` key and no ``linux`` line. beadm parses it,
counts it as bootable exactly when its EFI program is on the ESP (as systemd-boot does), and
its check, sync and GC leave the entry and its program alone.

The program's path on the ESP is this test's assumption (the fact sheet names only the entry
and its keys); what matters is that the entry names a file outside beadm's store."""

from __future__ import annotations

from pathlib import Path

import pytest

from beadm.esp import entries as ent
from beadm.sdboot import resolve
from worlds.sdboot import UUIDS, World, tree_snapshot

MEMTEST_ID = "memtest86+x64.efi.conf"
MEMTEST_EFI = "EFI/memtest86/memtest86+x64.efi"
MEMTEST_TEXT = f"title Memory test (memtest86+x64.efi)\nefi /{MEMTEST_EFI}\n"


def add_memtest(esp: Path, *, with_program: bool = True) -> None:
    (esp / "loader/entries" / MEMTEST_ID).write_text(MEMTEST_TEXT)
    if with_program:
        (esp / MEMTEST_EFI).parent.mkdir(parents=True, exist_ok=True)
        (esp / MEMTEST_EFI).write_bytes(b"MZ memtest86+ program")


def memtest_files(esp: Path) -> dict[str, bytes]:
    return {rel: (esp / rel).read_bytes()
            for rel in (f"loader/entries/{MEMTEST_ID}", MEMTEST_EFI) if (esp / rel).exists()}


def test_efi_entry_parses_without_a_linux_line_and_round_trips() -> None:
    e = ent.parse(MEMTEST_TEXT)
    assert e.efi == f"/{MEMTEST_EFI}"
    assert e.linux == "" and e.initrd == () and e.other == ()
    assert e.title == "Memory test (memtest86+x64.efi)"
    assert e.root_dataset() is None  # boots no BE
    assert e.store_paths() == [MEMTEST_EFI]
    assert "linux" not in e.render().split()
    assert ent.parse(e.render()) == e
    # the id is no beadm entry and carries no boot counter ("+x64" is no "+N")
    assert ent.be_of_id(MEMTEST_ID, ["pve-1", "memtest86"]) is None
    assert ent.strip_counter(MEMTEST_ID) == MEMTEST_ID
    assert ent.tries_left(MEMTEST_ID) is None


def test_a_beadm_entry_still_renders_its_linux_line() -> None:
    e = ent.Entry(title="t", options="root=ZFS=rpool/ROOT/a", linux="/beadm/k", be="a")
    assert "linux /beadm/k" in e.render().splitlines()
    assert ent.parse(e.render()) == e


def test_efi_entry_is_bootable_only_with_its_program(tmp_path: Path) -> None:
    (tmp_path / "loader/entries").mkdir(parents=True)
    add_memtest(tmp_path, with_program=False)
    found = {MEMTEST_ID: ent.parse(MEMTEST_TEXT)}
    assert resolve.usable(tmp_path, found) == {}
    assert resolve.pick(tmp_path, found, oneshot=None, efi_default=None,
                        conf_default=MEMTEST_ID) is None
    add_memtest(tmp_path)
    assert list(resolve.usable(tmp_path, found)) == [MEMTEST_ID]
    # chosen by name, like any entry (a one-shot memory test from the boot menu)
    assert resolve.pick(tmp_path, found, oneshot=MEMTEST_ID, efi_default=None,
                        conf_default="proxmox-*") == MEMTEST_ID


@pytest.fixture
def w(tmp_path: Path) -> World:
    world = World(tmp_path)
    for esp in world.esps.values():
        add_memtest(esp)
    return world


def test_memtest_entry_is_left_alone_by_init_create_activate_check_sync_destroy(
        w: World) -> None:
    before = {u: memtest_files(w.esps[u]) for u in UUIDS}
    assert all(len(f) == 2 for f in before.values())
    assert w.backend.boot_state(w.refs()).next_boot == "pve-1"  # proxmox-* still decides
    w.backend.init(w.ref("pve-1"))
    w.add_be("pve-2", clone_of="pve-1")
    w.backend.post_create(w.ref("pve-2"))
    w.backend.activate(w.ref("pve-2"), temporary=False)
    assert w.backend.check(w.refs()).problems == ()
    assert all(w.booted(u) == "pve-2" for u in UUIDS)
    w.backend.sync(w.refs())
    assert w.backend.boot_state(w.refs()).next_boot == "pve-2"
    w.backend.activate(w.ref("pve-1"), temporary=False)
    w.backend.post_destroy(w.ref("pve-2"))
    del w.bes["rpool/ROOT/pve-2"]
    w.backend.sync(w.refs())
    assert w.backend.check(w.refs()).problems == ()
    for u in UUIDS:
        assert memtest_files(w.esps[u]) == before[u]
        assert w.booted(u) == "pve-1"


def test_memtest_entry_without_its_program_is_neither_reported_nor_removed(w: World) -> None:
    for esp in w.esps.values():
        (esp / MEMTEST_EFI).unlink()
    w.backend.init(w.ref("pve-1"))
    snap = {u: tree_snapshot(w.esps[u] / "loader/entries") for u in UUIDS}
    assert w.backend.check(w.refs()).problems == ()
    w.backend.sync(w.refs())
    for u in UUIDS:
        assert tree_snapshot(w.esps[u] / "loader/entries") == snap[u]
        assert (w.esps[u] / "loader/entries" / MEMTEST_ID).read_text() == MEMTEST_TEXT
