"""Issue 11.1: beadm never takes the room Proxmox's next kernel needs on an ESP. Before any
ESP is written, every ESP must take the BE's kernel files it lacks and keep the size of
Proxmox's largest kernel + initrd pair free; else nothing is written anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from sdboot_world import UUIDS, World, tree_snapshot

from beadm.errors import BootError
from beadm.sdboot import backend as sdb


def _limit(monkeypatch: pytest.MonkeyPatch, w: World, uuid: str, free: int) -> None:
    """ESP ``uuid`` has ``free`` bytes free (512-byte clusters); the others are roomy."""
    real = sdb._free_space
    esp = w.esps[uuid]
    monkeypatch.setattr(sdb, "_free_space",
                        lambda p: (free, 512) if Path(p) == esp else real(p))


def _pair(w: World, uuid: str) -> int:
    from beadm.sdboot.store import EspStore

    return EspStore(w.esps[uuid], uuid).proxmox_pair_bytes()


@pytest.fixture
def w(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.backend.init(w.ref("pve-1"))
    return w


def test_a_be_with_new_kernels_is_refused_before_any_esp_changes(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w.add_be("pve-2", {"6.9.1-1-pve": b"a newer kernel" * 50}, clone_of="pve-1")
    headroom = _pair(w, UUIDS[1])
    assert headroom > 0
    _limit(monkeypatch, w, UUIDS[1], headroom + 100)  # room for Proxmox, not for both
    before = {u: tree_snapshot(e) for u, e in w.esps.items()}
    with pytest.raises(BootError, match=f"nothing written: ESP {UUIDS[1]} has .* Proxmox's"):
        w.backend.post_create(w.ref("pve-2"))
    assert {u: tree_snapshot(e) for u, e in w.esps.items()} == before  # ESP 1 untouched too


def test_a_be_sharing_stored_kernels_needs_no_room(w: World,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    w.add_be("pve-2", clone_of="pve-1")  # the same kernels: only two small entry files
    _limit(monkeypatch, w, UUIDS[1], 0)
    w.backend.post_create(w.ref("pve-2"))
    w.backend.activate(w.ref("pve-2"), temporary=False)
    for u in UUIDS:
        assert w.booted(u) == "pve-2"


def test_activate_of_a_be_whose_kernels_left_the_esp_checks_room_too(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    w.add_be("pve-2", {"6.9.1-1-pve": b"a newer kernel" * 50}, clone_of="pve-1")
    w.backend.post_create(w.ref("pve-2"))
    for u in UUIDS:  # the store files went (a wiped ESP restored by reinit, say)
        for f in (w.esps[u] / "beadm").glob("*6.9.1-1-pve*"):
            f.unlink()
    _limit(monkeypatch, w, UUIDS[0], 10)
    with pytest.raises(BootError, match="not enough room"):
        w.backend.activate(w.ref("pve-2"), temporary=False)
    assert w.efi("LoaderEntryDefault") != "beadm-pve-2-6.9.1-1-pve.conf"
