"""Issue 11.1: beadm never takes the room Proxmox's next kernel needs on an ESP. Before any
ESP is written, every ESP must take the BE's kernel files it lacks and keep the size of
Proxmox's largest kernel + initrd pair free; else nothing is written anywhere."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from beadm.errors import BootError
from beadm.esp import entries as ent
from beadm.esp import room
from worlds.sdboot import K1, K2, UUIDS, World, tree_snapshot


def _limit(monkeypatch: pytest.MonkeyPatch, w: World, uuid: str, free: int) -> None:
    """ESP ``uuid`` has ``free`` bytes free (512-byte clusters); the others are roomy."""
    real = room.free_space
    esp = w.esps[uuid]
    monkeypatch.setattr(room, "free_space",
                        lambda p: (free, 512) if Path(p) == esp else real(p))


def _pair(w: World, uuid: str) -> int:
    from beadm.esp.store import EspStore

    return EspStore(w.esps[uuid], uuid).proxmox_pair_bytes()


@pytest.fixture
def w(sdboot_world: World) -> World:
    w = sdboot_world
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


def test_free_space_is_asked_only_when_an_esp_lacks_a_file(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: statvfs on FAT counts every free cluster the first time after a mount, so
    the room check asks for it only where a file is to be stored."""
    asked: list[Path] = []
    real = room.free_space

    def free_space(p: Path) -> tuple[int, int]:
        asked.append(Path(p))
        return real(p)

    monkeypatch.setattr(room, "free_space", free_space)
    w.add_be("pve-2", clone_of="pve-1")  # the same kernels, stored on both ESPs
    w.backend.post_create(w.ref("pve-2"))
    w.backend.activate(w.ref("pve-2"), temporary=False)
    assert asked == []
    w.add_be("pve-3", {"6.9.1-1-pve": b"a newer kernel" * 50}, clone_of="pve-1")
    w.backend.post_create(w.ref("pve-3"))
    assert sorted(asked) == sorted(w.esps[u] for u in UUIDS)


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


# -- the fit: what sync (the kernel hooks, the shutdown re-assert) stores when ESPs are tight

OLD1, OLD2, OLD3 = "6.1.0-1-pve", "6.1.0-2-pve", "6.1.0-3-pve"


def _rounded(size: int) -> int:
    return -(-size // 512) * 512


def _pair_of(root: Path, kver: str) -> int:
    return sum(_rounded((root / "boot" / f"{n}-{kver}").stat().st_size)
               for n in ("vmlinuz", "initrd.img"))


def _held(w: World, uuid: str) -> int:
    return sum(_rounded(p.stat().st_size) for p in (w.esps[uuid] / "beadm").iterdir())


def _ids(w: World, uuid: str, be: str) -> set[str]:
    from beadm.esp.store import EspStore

    return {f for f, e in EspStore(w.esps[uuid], uuid).beadm_entries().items() if e.be == be}


def _used(esp: Path) -> int:
    return sum(_rounded(f.stat().st_size) for f in esp.rglob("*") if f.is_file())


def _capacity(monkeypatch: pytest.MonkeyPatch, w: World, uuid: str, free_now: int) -> None:
    """ESP ``uuid`` is a file system with ``free_now`` bytes free at this moment: writing
    takes free space and removing gives it back (512-byte clusters)."""
    real = room.free_space
    esp = w.esps[uuid]
    cap = _used(esp) + free_now
    monkeypatch.setattr(room, "free_space",
                        lambda p: (cap - _used(esp), 512) if Path(p) == esp else real(p))


def _old_be(w: World) -> Path:
    """A BE from long ago: two big kernels that nothing on the ESPs has yet."""
    return w.add_be("old", {OLD1: b"o" * 4000, OLD2: b"p" * 4000})


def test_tight_esps_keep_only_the_kernel_each_be_boots_and_check_agrees(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _old_be(w)
    u = UUIDS[1]
    headroom, held = _pair(w, u), _held(w, u)
    lean_total = held + _pair_of(old, OLD2)  # pve-1's files + old's newest pair
    # old's newest pair and its entry fit beside Proxmox's next kernel, its older one not
    free = lean_total - held + 512 + headroom + 10
    _capacity(monkeypatch, w, u, free)
    warned = w.backend.sync(w.refs())
    assert _ids(w, u, "old") == {ent.entry_filename("old", OLD2)}
    assert _ids(w, UUIDS[0], "old") == {ent.entry_filename("old", OLD2)}  # the same everywhere
    # pve-1 runs K1 and boots K2: it keeps both
    assert _ids(w, u, "pve-1") == {ent.entry_filename("pve-1", k) for k in (K1, K2)}
    assert any("tight" in n and "old" in n for n in warned)
    assert w.backend.check(w.refs()).problems == ()  # the same fit: no drift to report
    w.backend.sync(w.refs())  # and a second sync changes nothing
    assert _ids(w, u, "old") == {ent.entry_filename("old", OLD2)}
    monkeypatch.undo()  # room again: old gets both of its kernels back
    w.backend.sync(w.refs())
    assert _ids(w, u, "old") == {ent.entry_filename("old", k) for k in (OLD1, OLD2)}
    assert w.backend.check(w.refs()).problems == ()


def test_no_room_even_for_the_kernel_a_be_boots_holds_that_be_as_it_was(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel update inside a BE when the ESPs cannot take it with Proxmox's next kernel:
    the BE keeps the entries it has and stays the default; sync and check say why."""
    old = _old_be(w)
    w.backend.sync(w.refs())
    w.backend.activate(w.ref("old"), temporary=False)
    (old / "boot" / f"vmlinuz-{OLD3}").write_bytes(b"q" * 4000)  # old's own kernel update
    (old / "boot" / f"initrd.img-{OLD3}").write_bytes(b"r" * 40000)
    for u in UUIDS:
        _capacity(monkeypatch, w, u, _pair(w, u) + 100)  # room for Proxmox's next kernel only
    before = {u: tree_snapshot(e) for u, e in w.esps.items()}
    warned = w.backend.sync(w.refs())
    assert {u: tree_snapshot(e) for u, e in w.esps.items()} == before
    assert any(f"BE old: no room for kernel {OLD3}" in n for n in warned)
    assert {w.booted(u) for u in UUIDS} == {"old"}
    assert w.efi("LoaderEntryDefault") == ent.entry_filename("old", OLD2)
    problems = w.backend.check(w.refs()).problems
    assert [p for p in problems if p.startswith("BE old: no room")], problems


def test_create_on_tight_esps_stores_the_lean_set_instead_of_refusing(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _old_be(w)
    u = UUIDS[0]
    free = _pair_of(old, OLD2) + 512 + _pair(w, u) + 10
    _capacity(monkeypatch, w, u, free)
    warned = w.backend.post_create(w.ref("old"))
    assert _ids(w, u, "old") == _ids(w, UUIDS[1], "old") == {ent.entry_filename("old", OLD2)}
    assert any("tight" in n for n in warned)


def test_a_new_running_kernel_on_tight_esps_is_no_drift_and_sync_lets_the_old_go(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Booted into the new kernel: the lean set of the running BE shrinks to it; the entry
    of the kernel that ran before is not drift for check (the BE still has that kernel),
    and the next sync removes it."""
    old = _old_be(w)
    u = UUIDS[1]
    free = _pair_of(old, OLD2) + 512 + _pair(w, u) + 10
    _capacity(monkeypatch, w, u, free)
    w.backend.sync(w.refs())
    assert _ids(w, u, "pve-1") == {ent.entry_filename("pve-1", k) for k in (K1, K2)}
    w.host._kernel = K2  # the reboot into the newest kernel
    assert w.backend.check(w.refs()).problems == ()
    w.backend.sync(w.refs())
    assert _ids(w, u, "pve-1") == {ent.entry_filename("pve-1", K2)}
    assert w.backend.check(w.refs()).problems == ()


def test_a_tight_kernel_update_names_only_the_be_that_lacks_room(
        w: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 23.8: a kernel update in the running BE on ESPs with room for Proxmox's next
    kernel only. The running BE is held (it lacks room for its new kernel); a clone whose
    kernels are all stored already needs nothing new and is not named as lacking room."""
    w.add_be("pve-2", clone_of="pve-1")
    w.backend.sync(w.refs())
    NEW = "9.9.9-1-pve"  # newer than every kernel of the world: the one pve-1 boots next
    run = w.bes_by_name()["pve-1"]
    (run / "boot" / f"vmlinuz-{NEW}").write_bytes(b"q" * 4000)  # the running BE's update
    (run / "boot" / f"initrd.img-{NEW}").write_bytes(b"r" * 40000)
    for u in UUIDS:
        _capacity(monkeypatch, w, u, _pair(w, u) + 100)  # Proxmox's next kernel only
    w.pbt_refresh_entries("pve-1")  # Proxmox's hook ran first: its copy of NEW took room
    with caplog.at_level(logging.WARNING, logger="beadm"):
        warned = w.backend.sync(w.refs())
    # the CLI prints the returned warnings ("beadm: warning: ..."): the log must not say
    # them a second time
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not set(logged) & set(warned), logged
    named = [n for n in warned if "no room" in n]
    assert len(named) == 1 and named[0].startswith("BE pve-1: no room"), warned
    problems = w.backend.check(w.refs()).problems
    assert not [p for p in problems if p.startswith("BE pve-2")], problems
    for u in UUIDS:  # pve-2 still boots, from the files stored already
        assert _ids(w, u, "pve-2"), u

