"""Helpers for lab tests (imported as ``from labpool import ...``): a fresh pool on a blank lab
disk; the digest of a whole ESP device."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from beadm.sdboot.backend import SystemdBootBackend


def create_pool(name: str, altroot: str, disk: Path) -> None:
    """``zpool create -R altroot -O mountpoint=none name disk``, after destroying any pool of
    that name; up to three attempts (whole-disk ``zpool create`` races udev now and then)."""
    subprocess.run(["zpool", "destroy", "-f", name], capture_output=True, check=False)
    create = ["zpool", "create", "-f", "-R", altroot, "-O", "mountpoint=none", name, str(disk)]
    for attempt in range(3):
        subprocess.run(["udevadm", "settle"], check=True)
        res = subprocess.run(create, capture_output=True, text=True)
        if res.returncode == 0:
            return
        print(f"zpool create, attempt {attempt + 1}: {res.stderr.strip()}")
        time.sleep(2)
    raise AssertionError(f"zpool create failed: {res.stderr}")


def device_digest(path: Path) -> str:
    """A digest of every byte of a device (an ESP), to see that nothing changed. MD5, not
    SHA-256: this catches accidents, not attacks, and SHA-256 runs at ~11 MiB/s in the TCG
    VM (90 s per 512 MiB ESP; one test's state() took minutes) against MD5's ~300."""
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def lab_sdboot_backend(tmp_path: Path, uuids: list[str]) -> SystemdBootBackend:
    """The systemd-boot backend on the lab's real ESPs: ``uuids`` as the host's ESP list
    (in ``tmp_path/etc``), the VM's efivarfs where it has one (``--uefi``), else a
    directory standing in for it."""
    from beadm.esp.efivars import EFIVARS
    from beadm.esp.host import SystemHost
    from beadm.runner import SubprocessRunner
    from beadm.sdboot.backend import SystemdBootBackend

    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "proxmox-boot-uuids").write_text("\n".join(uuids) + "\n")
    efi = EFIVARS if EFIVARS.is_dir() else tmp_path / "efivars"
    efi.mkdir(exist_ok=True)
    runner = SubprocessRunner()
    return SystemdBootBackend(runner, host=SystemHost(runner, etc_kernel=etc, efivars=efi))
