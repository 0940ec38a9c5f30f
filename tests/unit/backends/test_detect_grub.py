"""Issue 14 item 3: ``--backend auto`` picks the GRUB backend on GRUB hosts (legacy BIOS, or
every ESP with shim + GRUB), systemd-boot on systemd-boot hosts, and refuses a mixed host."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from beadm import registry
from beadm.detect import GRUB, SDBOOT, GuardedBackend
from beadm.errors import UnsupportedError
from beadm.grub.backend import GrubBackend
from beadm.sdboot.backend import SystemdBootBackend
from worlds.fakes import FakeRunner
from worlds.grub import UUIDS, GrubWorld
from worlds.sdboot import UUIDS as SD_UUIDS
from worlds.sdboot import World, tree_snapshot


def auto(w: GrubWorld, tmp: Path, *, uefi: bool) -> GuardedBackend:
    efi = tmp / "sys-firmware-efi"
    if uefi:
        efi.mkdir(exist_ok=True)
    sd = SystemdBootBackend(w.runner, host=w.host, out=w.out)
    return GuardedBackend(sd, efi_dir=efi, grub=w.backend)


def test_legacy_bios_host_is_a_grub_host(tmp_path: Path) -> None:
    w = GrubWorld(tmp_path)
    g = auto(w, tmp_path, uefi=False)
    assert g.reason() is None
    assert g.name == GRUB
    g.init(w.ref("pve-1"))
    w.add_be("pve-2", clone_of="pve-1")
    g.post_create(w.ref("pve-2"))
    g.activate(w.ref("pve-2"), temporary=False)
    assert [w.boot(u) for u in UUIDS] == ["pve-2", "pve-2"]
    assert g.boot_state(w.refs()).next_boot == "pve-2"
    assert g.check(w.refs()).problems == ()
    with pytest.raises(UnsupportedError, match="GRUB"):
        g.activate_trial(w.ref("pve-2"), w.ref("pve-1"), 3)
    assert g.trial_state(w.refs()) is None
    assert not g.trials()  # what upgrade's hint asks (issue 23.8)


def test_uefi_host_with_grub_on_every_esp_is_a_grub_host(tmp_path: Path) -> None:
    w = GrubWorld(tmp_path)
    for esp in w.esps.values():
        (esp / "EFI/proxmox").mkdir(parents=True)
        (esp / "EFI/proxmox/grubx64.efi").write_bytes(b"grub")
        (esp / "EFI/proxmox/shimx64.efi").write_bytes(b"shim")
    g = auto(w, tmp_path, uefi=True)
    assert g.reason() is None and g.name == GRUB
    g.init(w.ref("pve-1"))
    assert (w.esps[UUIDS[0]] / "grub/custom.cfg").is_file()


def test_mixed_host_is_refused_with_one_line_and_nothing_changes(tmp_path: Path) -> None:
    w = GrubWorld(tmp_path)
    grub_esp, sd_esp = w.esps[UUIDS[0]], w.esps[UUIDS[1]]
    (grub_esp / "EFI/proxmox").mkdir(parents=True)
    (grub_esp / "EFI/proxmox/grubx64.efi").write_bytes(b"grub")
    (sd_esp / "loader/entries").mkdir(parents=True)
    (sd_esp / "loader/loader.conf").write_text("timeout 3\ndefault proxmox-*\n")
    (sd_esp / "EFI/systemd").mkdir(parents=True)
    g = auto(w, tmp_path, uefi=True)
    before = tree_snapshot(tmp_path / "esp")
    why = g.reason()
    assert why is not None and "\n" not in why
    assert why.startswith("mixed host: ESP BBBB-0001 boots with GRUB")
    assert "ESP BBBB-0002 with systemd-boot" in why
    for call in (lambda: g.init(w.ref("pve-1")),
                 lambda: g.activate(w.ref("pve-1"), temporary=False),
                 lambda: g.sync(w.refs())):
        with pytest.raises(UnsupportedError) as exc:
            call()
        assert exc.value.exit_code == 7
    g.sync(w.refs(), only_if_used=True)  # the hooks: quietly nothing
    assert g.check(w.refs()).problems == (why,)
    st = g.boot_state(w.refs())
    assert st.decides is False and st.next_boot is None
    assert tree_snapshot(tmp_path / "esp") == before


def test_legacy_bios_esp_without_grub_is_refused(tmp_path: Path) -> None:
    w = GrubWorld(tmp_path)
    shutil.rmtree(w.esps[UUIDS[1]] / "grub")
    g = auto(w, tmp_path, uefi=False)
    why = g.reason()
    assert why is not None and f"ESP {UUIDS[1]} has no GRUB" in why
    with pytest.raises(UnsupportedError):
        g.preflight()


def test_systemd_boot_host_still_picks_systemd_boot(tmp_path: Path) -> None:
    w = World(tmp_path)
    efi = tmp_path / "sys-firmware-efi"
    efi.mkdir()
    g = GuardedBackend(w.backend, efi_dir=efi, grub=GrubBackend(w.runner, host=w.host))
    assert g.reason() is None and g.name == SDBOOT
    assert g.trials()
    w.add_be("pve-2", {"6.8.12-1-pve": b"k"}, clone_of="pve-1")
    g.post_create(w.ref("pve-2"))
    g.activate(w.ref("pve-2"), temporary=False)
    assert w.booted(SD_UUIDS[0]) == w.booted(SD_UUIDS[1]) == "pve-2"


def test_auto_builds_the_guard_with_both_backends(tmp_path: Path) -> None:
    (tmp_path / "proxmox-boot-uuids").write_text("1111-AAAA\n")
    b = registry.make_backend("auto", FakeRunner(), etc_kernel=tmp_path)
    assert isinstance(b, GuardedBackend) and isinstance(b.grub, GrubBackend)
    # one host: the session the library holds is the one the GRUB backend mounts in
    assert b.grub.host is b.inner.host


def test_a_grub_hosts_hooks_go_to_the_grub_backend(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24: prune's ESP floor asked systemd-boot's layout on a GRUB host."""
    w = GrubWorld(tmp_path)
    g = auto(w, tmp_path, uefi=False)
    asked: list[str] = []
    monkeypatch.setattr(g.inner, "esp_usage", lambda bes: asked.append("sdboot") or ())
    monkeypatch.setattr(w.backend, "esp_usage", lambda bes: asked.append("grub") or None)
    assert g.esp_usage(w.refs()) is None
    assert asked == ["grub"]
    assert not g.trials() and not g.booted_trial()
