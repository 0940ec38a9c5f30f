"""The lab's proxmox-boot-tool fixture (lab/fixtures/proxmox-boot-tool) behaves as the facts read
from Proxmox's sources say (docs/proxmox-facts-2.md): what it keeps, what refresh runs, what
reinit does not do, pins. Its ESP and dpkg access are pointed at temp dirs and fakes."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from worlds import REPO

TOOL = REPO / "lab" / "fixtures" / "proxmox-boot-tool"
RUNNING = os.uname().release


def load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("pbt_fixture", str(TOOL))
    spec = importlib.util.spec_from_loader("pbt_fixture", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


@pytest.fixture
def pbt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    m = load()
    etc = tmp_path / "etc-kernel"
    etc.mkdir()
    for name, rel in (("BOOT", "boot"), ("POSTINST_D", "postinst.d")):
        (tmp_path / rel).mkdir()
        monkeypatch.setattr(m, name, tmp_path / rel)
    for name, fname in (("PIN", "proxmox-boot-pin"), ("NEXT_PIN", "next-boot-pin"),
                        ("MANUAL", "proxmox-boot-manual-kernels"), ("CMDLINE", "cmdline"),
                        ("UUIDS", "proxmox-boot-uuids")):
        monkeypatch.setattr(m, name, etc / fname)
    m.dpkg = ""

    monkeypatch.setattr(m, "GRUB_PIN_SNIPPET", tmp_path / "grub.d" / "proxmox-kernel-pin.cfg")
    monkeypatch.setattr(m, "ROOT_GRUB_CFG", tmp_path / "boot-grub.cfg")

    class Res:
        returncode = 0
        stderr = ""

        @property
        def stdout(self) -> str:
            return str(m.dpkg)

    monkeypatch.setattr(m, "run", lambda *a, **k: Res())
    return m


def kernels(m: Any, *kvers: str) -> None:
    for k in kvers:
        (m.BOOT / f"vmlinuz-{k}").write_text(f"kernel {k}")
        (m.BOOT / f"initrd.img-{k}").write_text(f"initrd {k}")


def test_kept_from_proxmox_kernel_packages_three_newest_plus_running_and_pins(pbt: Any) -> None:
    ks = [f"6.8.12-{n}-pve" for n in (1, 2, 3, 4, 10)]
    kernels(pbt, *ks, "6.1.0-9-amd64", RUNNING)
    pbt.dpkg = "".join(f"installed proxmox-kernel-{k}-signed\n" for k in ks[1:]) + (
        f"installed pve-kernel-{ks[0]}\n"
        "installed proxmox-kernel-6.8\n"            # a series meta-package: no such kernel
        "config-files proxmox-kernel-6.8.12-9-pve\n")  # removed, not purged
    # Debian's 6.1.0-9-amd64 has no Proxmox package: never kept
    assert pbt.kept_kernels() == sorted([*ks[2:], RUNNING], key=pbt.version_key)
    pbt.PIN.write_text(f"{ks[0]}\n")
    assert ks[0] in pbt.kept_kernels()
    assert ks[4] not in pbt.kept_kernels(removing=ks[4])
    assert "6.1.0-9-amd64" in pbt.kept_kernels(hook_kver="6.1.0-9-amd64")


def test_refresh_runs_the_hook_scripts_directly_not_run_parts(pbt: Any, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    for name in ("zz-proxmox-boot", "zzz-beadm", "proxmox-auto-removal"):
        script = pbt.POSTINST_D / name
        script.write_text(f"#!/bin/sh\necho {name} \"$#\" >> {ran}\n")
        script.chmod(0o755)
    assert pbt.cmd_refresh() == 0
    assert ran.read_text().splitlines() == ["proxmox-auto-removal 0", "zz-proxmox-boot 0"]
    ran.unlink()
    assert pbt.cmd_refresh("zz-proxmox-boot") == 0
    assert ran.read_text().splitlines() == ["zz-proxmox-boot 0"]
    with pytest.raises(pbt.Fail):
        pbt.cmd_refresh("zzz-beadm")


def test_a_failing_hook_fails_the_refresh(pbt: Any) -> None:
    script = pbt.POSTINST_D / "zz-proxmox-boot"
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o755)
    assert pbt.cmd_refresh() == 1


def test_reinit_rewrites_loader_conf_and_does_not_refresh(pbt: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pbt.UUIDS.write_text("AAAA-0001\nAAAA-0002\n")
    inits: list[str] = []
    monkeypatch.setattr(pbt, "in_private_namespace", lambda: None)
    monkeypatch.setattr(pbt, "init_one", lambda uuid, part=None: inits.append(uuid) or True)
    monkeypatch.setattr(pbt, "cmd_refresh", lambda *a: pytest.fail("reinit refreshed"))
    monkeypatch.setattr(pbt, "cmd_sync_esps", lambda *a: pytest.fail("reinit synced"))
    assert pbt.cmd_reinit() == 0
    assert inits == ["AAAA-0001", "AAAA-0002"]


def test_reinit_of_an_empty_list_does_nothing_and_of_no_list_fails(
        pbt: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real tool loops over the list file's lines under set -e: an empty file (what
    ``beadm upgrade`` binds over a clone's list) is a successful no-op, a missing one exit 2."""
    monkeypatch.setattr(pbt, "in_private_namespace", lambda: None)  # the real one unshares too
    monkeypatch.setattr(pbt, "init_one", lambda *a: pytest.fail("no ESP to init"))
    assert pbt.cmd_reinit() == 2
    pbt.UUIDS.write_text("")
    assert pbt.cmd_reinit() == 0
    pbt.UUIDS.write_text("\n\n")
    assert pbt.cmd_reinit() == 0


def test_esp_sync_keeps_beadm_files_and_writes_the_pin_default(pbt: Any, tmp_path: Path) -> None:
    kernels(pbt, "6.8.12-1-pve", "6.8.12-2-pve")
    pbt.CMDLINE.write_text("root=ZFS=rpool/ROOT/pve-1 boot=zfs\n")
    esp = tmp_path / "esp"
    (esp / "EFI/proxmox/6.8.12-0-pve").mkdir(parents=True)
    (esp / "beadm").mkdir()
    (esp / "beadm/abc-vmlinuz-x").write_text("beadm's")
    (esp / "loader/entries").mkdir(parents=True)
    (esp / "loader/entries/beadm-pve-2-x.conf").write_text("beadm's")
    (esp / "loader/entries/proxmox-6.8.12-0-pve.conf").write_text("old")
    (esp / "loader/loader.conf").write_text("timeout 3\ndefault beadm-pve-2-x.conf\n")
    pbt.PIN.write_text("6.8.12-1-pve\n")
    pbt.refresh_esp(esp, ["6.8.12-1-pve", "6.8.12-2-pve"], pbt.kernel_options())
    assert (esp / "loader/loader.conf").read_text() == \
        "timeout 3\ndefault proxmox-6.8.12-1-pve.conf\n"
    assert sorted(p.name for p in (esp / "loader/entries").iterdir()) == [
        "beadm-pve-2-x.conf", "proxmox-6.8.12-1-pve.conf", "proxmox-6.8.12-2-pve.conf"]
    assert (esp / "beadm/abc-vmlinuz-x").read_text() == "beadm's"
    assert sorted(p.name for p in (esp / "EFI/proxmox").iterdir()) == [
        "6.8.12-1-pve", "6.8.12-2-pve"]
    assert "options  root=ZFS=rpool/ROOT/pve-1 boot=zfs\n" in \
        (esp / "loader/entries/proxmox-6.8.12-2-pve.conf").read_text()


def test_grub_esp_gets_no_systemd_boot_entry(pbt: Any, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    esp = tmp_path / "esp"
    (esp / "EFI/proxmox").mkdir(parents=True)
    (esp / "EFI/proxmox/grubx64.efi").write_text("grub")
    assert pbt.esp_mode(esp) == "grub"
    monkeypatch.setattr(pbt, "uefi_booted", lambda: False)
    (esp / "EFI/proxmox/grubx64.efi").unlink()
    (esp / "grub").mkdir()
    (esp / "loader").mkdir()
    (esp / "loader/loader.conf").write_text("default x\n")
    assert pbt.esp_mode(esp) == "grub"
    kernels(pbt, "6.8.12-1-pve")
    (esp / "vmlinuz-6.8.12-0-pve").write_text("old")
    pbt.refresh_grub_esp(esp, ["6.8.12-1-pve"])
    assert sorted(p.name for p in esp.iterdir() if p.is_file()) == [
        "initrd.img-6.8.12-1-pve", "vmlinuz-6.8.12-1-pve"]
    assert not (esp / "loader/entries").exists()
    assert (esp / "loader/loader.conf").read_text() == "default x\n"


def test_pin_without_a_terminal_does_not_refresh(pbt: Any, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    kernels(pbt, "6.8.12-1-pve")
    monkeypatch.setattr(pbt, "cmd_refresh", lambda *a: pytest.fail("refreshed"))
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    assert pbt.cmd_kernel(["pin", "6.8.12-1-pve", "--next-boot"]) == 0
    assert pbt.NEXT_PIN.read_text() == "6.8.12-1-pve\n"
    assert "run 'proxmox-boot-tool refresh'" in capsys.readouterr().out


def test_esp_sync_of_an_empty_list_checks_the_cmdline_and_touches_nothing(
        pbt: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """zz-proxmox-boot reads /etc/kernel/cmdline (root= required) before it loops over the
    list's lines: an empty list syncs nothing, but a cmdline without root= still fails."""
    monkeypatch.setattr(pbt, "in_private_namespace", lambda: pytest.fail("nothing to mount"))
    pbt.UUIDS.write_text("")
    pbt.CMDLINE.write_text("root=ZFS=rpool/ROOT/pve-1 boot=zfs\n")
    assert pbt.cmd_sync_esps() == 0
    pbt.CMDLINE.write_text("boot=zfs quiet\n")
    with pytest.raises(pbt.Fail, match="root="):
        pbt.cmd_sync_esps()


class Recorder:
    """``run`` of the fixture: records argv, answers lsblk with a parent disk."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *argv: str, check: bool = True) -> Any:
        self.calls.append(argv)
        out = "vda\n" if argv[0] == "lsblk" else ""

        class Res:
            returncode = 0
            stdout = out
            stderr = ""

        return Res()


def test_grub_refresh_regenerates_grub_cfg_with_the_esp_on_boot(
        pbt: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GRUB mode (lab/GRUB-FACTS.md): kernels at the ESP root, the pin as a grub.d snippet,
    then update-grub with the ESP bind-mounted on /boot, then /boot unmounted."""
    rec = Recorder()
    monkeypatch.setattr(pbt, "run", rec)
    snippet = pbt.GRUB_PIN_SNIPPET
    esp = tmp_path / "esp"
    (esp / "grub").mkdir(parents=True)
    kernels(pbt, "6.8.12-1-pve", "6.8.12-2-pve")
    pbt.PIN.write_text("6.8.12-1-pve\n")
    pbt.refresh_grub_esp(esp, ["6.8.12-1-pve", "6.8.12-2-pve"])
    assert (esp / "vmlinuz-6.8.12-2-pve").read_text() == "kernel 6.8.12-2-pve"
    assert snippet.read_text() == ('GRUB_DEFAULT="gnulinux-advanced->gnulinux-6.8.12-1-pve-'
                                   'advanced-"\n')
    assert rec.calls == [("mount", "--bind", str(esp), str(pbt.BOOT)), ("update-grub",),
                         ("umount", str(pbt.BOOT))]
    pbt.PIN.unlink()
    pbt.refresh_grub_esp(esp, ["6.8.12-2-pve"])
    assert not snippet.exists() and not (esp / "vmlinuz-6.8.12-1-pve").exists()


@pytest.mark.parametrize("uefi", [False, True])
def test_grub_init_installs_grub_on_the_esps_disk(pbt: Any, tmp_path: Path, uefi: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(pbt, "run", rec)
    monkeypatch.setattr(pbt, "uefi_booted", lambda: uefi)
    monkeypatch.setattr(pbt.shutil, "which", lambda name: None)
    esp = tmp_path / "esp"
    esp.mkdir()
    pbt.install_grub(esp, pbt.parent_disk("/dev/vda2"))
    installs = [c for c in rec.calls if c[0] == "grub-install"]
    if uefi:
        assert [c[c.index("--target") + 1] for c in installs] == ["x86_64-efi", "x86_64-efi"]
        assert "--removable" in installs[1] and "--removable" not in installs[0]
        assert all(c[c.index("--efi-directory") + 1] == str(esp) for c in installs)
    else:
        assert installs == [("grub-install", "--boot-directory", str(esp), "--target", "i386-pc",
                             "--no-floppy", "--bootloader-id=proxmox", "/dev/vda")]
