"""Issue 11 item 3: GRUB hosts are never silently "activated" (beadm.detect, registry)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from beadm import registry
from beadm.detect import GRUB, SDBOOT, GuardedBackend, esp_kind
from beadm.errors import UnsupportedError
from worlds.fakes import FakeRunner
from worlds.pool import manager, row
from worlds.sdboot import UUIDS, World, tree_snapshot

R = "rpool/ROOT"
LISTING = "".join([
    row(R, canmount="off"),
    row(f"{R}/pve-1", mountpoint="/", mounted="yes", canmount="on"),
    row(f"{R}/pve-2", mountpoint="/", canmount="noauto"),
])


def make_grub(esp: Path) -> None:
    """What a Secure Boot install (shim + GRUB) leaves on an ESP."""
    (esp / "EFI/proxmox").mkdir(parents=True, exist_ok=True)
    (esp / "EFI/proxmox/grubx64.efi").write_bytes(b"grub")
    (esp / "EFI/proxmox/shimx64.efi").write_bytes(b"shim")


def guarded(w: World, tmp: Path, *, uefi: bool = True) -> GuardedBackend:
    efi = tmp / "sys-firmware-efi"
    if uefi:
        efi.mkdir(exist_ok=True)
    return GuardedBackend(w.backend, efi_dir=efi)


def test_esp_kind(tmp_path: Path) -> None:
    sd, grub, both, empty = (tmp_path / n for n in ("sd", "grub", "both", "empty"))
    (sd / "EFI/systemd").mkdir(parents=True)
    make_grub(grub)
    (both / "loader").mkdir(parents=True)
    make_grub(both)
    empty.mkdir()
    assert [esp_kind(p) for p in (sd, grub, both, empty)] == [SDBOOT, GRUB, GRUB, "empty"]
    (empty / "loader").mkdir()
    assert esp_kind(empty) == SDBOOT


def test_systemd_boot_host_is_passed_through(tmp_path: Path) -> None:
    w = World(tmp_path)
    g = guarded(w, tmp_path)
    assert g.reason() is None
    w.add_be("pve-2", {"6.8.12-1-pve": b"k"}, clone_of="pve-1")
    g.post_create(w.ref("pve-2"))
    g.activate(w.ref("pve-2"), temporary=False)
    assert w.booted(UUIDS[0]) == w.booted(UUIDS[1]) == "pve-2"
    assert g.boot_state(w.refs()).next_boot == "pve-2"


def test_a_trial_through_the_guard_keeps_its_watchdog(tmp_path: Path) -> None:
    """The CLI's backend on a host is the guarded one: every trial argument reaches the inner
    backend (a boot test found ``--watchdog`` lost here)."""
    w = World(tmp_path)
    g = guarded(w, tmp_path)
    g.init(w.ref("pve-1"))
    w.add_be("pve-2", {"6.8.12-1-pve": b"k"}, clone_of="pve-1")
    g.post_create(w.ref("pve-2"))
    g.activate_trial(w.ref("pve-2"), w.ref("pve-1"), 2, 90)
    entries = w.esps[UUIDS[0]] / "loader/entries"
    (counted,) = [p for p in entries.iterdir() if "+2" in p.name]
    assert "softdog.soft_margin=90 softdog.soft_active_on_boot=1" in counted.read_text()


@pytest.mark.parametrize("hook", ["activate", "init", "post_create", "post_destroy", "sync",
                                  "migrate"])
def test_one_grub_esp_refuses_every_boot_change(tmp_path: Path, hook: str) -> None:
    w = World(tmp_path)
    w.add_be("pve-2", {"6.8.12-1-pve": b"k"}, clone_of="pve-1")
    make_grub(w.esps[UUIDS[1]])
    before = {u: tree_snapshot(p) for u, p in w.esps.items()}
    g = guarded(w, tmp_path)
    calls = {
        "activate": lambda: g.activate(w.ref("pve-2"), temporary=False),
        "init": lambda: g.init(w.ref("pve-1")),
        "post_create": lambda: g.post_create(w.ref("pve-2")),
        "post_destroy": lambda: g.post_destroy(w.ref("pve-2")),
        "sync": lambda: g.sync(w.refs()),
        "migrate": lambda: g.migrate(w.refs()),
    }
    with pytest.raises(UnsupportedError) as exc:
        calls[hook]()
    assert UUIDS[1] in exc.value.message and "GRUB" in exc.value.message
    assert "\n" not in exc.value.message
    assert {u: tree_snapshot(p) for u, p in w.esps.items()} == before
    assert w.efi("LoaderEntryDefault") is None
    assert not [c for c in w.runner.calls if c[:2] in (("zfs", "set"), ("zfs", "inherit"))]


def test_grub_host_hooks_sync_quietly_and_check_says_why(tmp_path: Path) -> None:
    w = World(tmp_path)
    make_grub(w.esps[UUIDS[0]])
    before = {u: tree_snapshot(p) for u, p in w.esps.items()}
    g = guarded(w, tmp_path)
    g.sync(w.refs(), only_if_used=True)  # zzz-beadm, the apt hook, the shutdown unit
    assert {u: tree_snapshot(p) for u, p in w.esps.items()} == before
    problems = g.check(w.refs()).problems
    assert len(problems) == 1 and UUIDS[0] in problems[0]


def test_legacy_bios_refuses_without_mounting(tmp_path: Path) -> None:
    w = World(tmp_path)
    g = guarded(w, tmp_path, uefi=False)
    with pytest.raises(UnsupportedError, match="legacy BIOS mode"):
        g.activate(w.ref("pve-1"), temporary=False)
    state = g.boot_state(w.refs())
    assert state.next_boot is None and not state.decides
    assert "legacy BIOS" in state.warnings[0]
    assert w.host.esp_mounts == 0


def test_wiped_esp_is_not_a_systemd_boot_esp(tmp_path: Path) -> None:
    w = World(tmp_path)
    esp = w.esps[UUIDS[1]]
    for sub in esp.iterdir():
        shutil.rmtree(sub)
    with pytest.raises(UnsupportedError, match=f"ESP {UUIDS[1]} has no boot loader"):
        guarded(w, tmp_path).preflight()


def test_be_library_changes_nothing_on_a_grub_host(tmp_path: Path) -> None:
    """activate, create, rename, destroy, init, sync: refused before any zfs change; list
    shows no R although the pool's bootfs names pve-1; snapshots still work."""
    w = World(tmp_path)
    make_grub(w.esps[UUIDS[0]])
    g = guarded(w, tmp_path)
    (tmp_path / "m").mkdir()
    mgr, runner, _ = manager(tmp_path / "m", listing=LISTING, backend=g)
    for call in (lambda: mgr.activate("pve-2"), lambda: mgr.activate("pve-2", temporary=True),
                 lambda: mgr.create("pve-3"), lambda: mgr.rename("pve-2", "pve-4"),
                 lambda: mgr.destroy("pve-2"), lambda: mgr.destroy_check("pve-2"),
                 lambda: mgr.init("pve-1"), lambda: mgr.sync(), mgr.migrate):
        with pytest.raises(UnsupportedError, match=UUIDS[0]):
            call()
    assert runner.changes == []
    mgr.sync(only_if_used=True)
    listing = mgr.listing()
    assert listing.bootfs == f"{R}/pve-1"
    assert [(i.be.name, i.running, i.next_boot) for i in listing.bes] == [
        ("pve-1", True, False), ("pve-2", False, False)]
    assert any("cannot tell which BE boots next" in x for x in listing.state.warnings)
    mgr.create("pve-1@before-upgrade")
    assert runner.changes == [("zfs", "snapshot", "-r", f"{R}/pve-1@before-upgrade")]


def test_auto_guards_systemd_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "proxmox-boot-uuids").write_text("1111-AAAA\n")
    monkeypatch.setattr(registry, "sdboot_available", lambda: True)
    b = registry.make_backend("auto", FakeRunner(), etc_kernel=tmp_path)
    assert isinstance(b, GuardedBackend)
    assert not isinstance(registry.make_backend("systemd-boot", FakeRunner()), GuardedBackend)
