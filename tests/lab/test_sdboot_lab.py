"""The systemd-boot backend on real OpenZFS and real FAT32 ESPs (lab VM; EFI variables too
when the VM was started with ``--uefi``): private-namespace mounts, shared store, entries,
loader.conf, LoaderEntryDefault, destroy/GC, and nothing left mounted afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from beadm.backend import BeRef
from beadm.runner import SubprocessRunner
from beadm.sdboot.backend import SystemdBootBackend
from beadm.sdboot.efivars import DEFAULT, EFIVARS, ONESHOT
from beadm.sdboot.host import SystemHost

POOL = "sdbtest"
KVER = "6.1.0-99-test"


@pytest.fixture
def machine(pool_disks: list[Path], esps: list[tuple[Path, str]], sh: Callable[..., str],
            tmp_path: Path) -> Iterator[tuple[SystemdBootBackend, list[str]]]:
    alt = tmp_path / "alt"
    sh("zpool", "create", "-f", "-R", str(alt), "-O", "mountpoint=none", POOL,
       str(pool_disks[0]))
    try:
        sh("zfs", "create", "-o", "canmount=off", f"{POOL}/ROOT")
        sh("zfs", "create", "-o", "mountpoint=/", "-o", "canmount=noauto", f"{POOL}/ROOT/a")
        sh("zfs", "mount", f"{POOL}/ROOT/a")
        root = alt
        (root / "boot").mkdir()
        (root / "etc/kernel").mkdir(parents=True)
        (root / f"boot/vmlinuz-{KVER}").write_bytes(b"K" * (3 << 20))
        (root / f"boot/initrd.img-{KVER}").write_bytes(b"I" * (5 << 20))
        (root / "etc/kernel/cmdline").write_text(f"root=ZFS={POOL}/ROOT/a boot=zfs quiet\n")
        sh("zfs", "umount", f"{POOL}/ROOT/a")
        sh("zfs", "snapshot", f"{POOL}/ROOT/a@s")
        sh("zfs", "clone", "-o", "mountpoint=/", "-o", "canmount=noauto",
           f"{POOL}/ROOT/a@s", f"{POOL}/ROOT/b")
        etc = tmp_path / "etc"
        etc.mkdir()
        uuids = [u for _, u in esps]
        (etc / "proxmox-boot-uuids").write_text("\n".join(uuids) + "\n")
        efi = EFIVARS if EFIVARS.is_dir() else tmp_path / "efivars"
        efi.mkdir(exist_ok=True)
        runner = SubprocessRunner()
        yield SystemdBootBackend(runner, host=SystemHost(runner, etc_kernel=etc,
                                                         efivars=efi)), uuids
    finally:
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)


def esp_ls(uuid: str, sh: Callable[..., str], *cmd: str) -> str:
    script = (f"mkdir -p /run/sdbt && mount -o ro /dev/disk/by-uuid/{uuid} /run/sdbt && "
              f"cd /run/sdbt && {' '.join(cmd)}")
    return sh("unshare", "--mount", "--propagation", "private", "sh", "-c", script)


def nothing_mounted(sh: Callable[..., str], uuids: list[str]) -> None:
    table = Path("/proc/self/mountinfo").read_text()
    assert f"{POOL}/ROOT" not in table
    for u in uuids:
        real = str(Path(f"/dev/disk/by-uuid/{u}").resolve())
        assert f" {real} " not in table


def test_backend_on_real_zfs_and_fat(machine: tuple[SystemdBootBackend, list[str]],
                                     sh: Callable[..., str]) -> None:
    backend, uuids = machine
    a, b = BeRef("a", f"{POOL}/ROOT/a"), BeRef("b", f"{POOL}/ROOT/b", "clone of a")
    backend.init(a)
    backend.post_create(b)
    nothing_mounted(sh, uuids)
    for u in uuids:
        files = esp_ls(u, sh, "ls beadm loader/entries").split()
        assert sum(1 for f in files if "-vmlinuz-" in f or "-initrd.img-" in f) == 2
        assert f"beadm-a-{KVER}.conf" in files and f"beadm-b-{KVER}.conf" in files
        text = esp_ls(u, sh, f"cat loader/entries/beadm-b-{KVER}.conf")
        assert f"options root=ZFS={POOL}/ROOT/b boot=zfs quiet" in text
    # b's own cmdline names b
    out = sh("sh", "-c", f"d=$(mktemp -d); mount -t zfs -o ro,zfsutil {POOL}/ROOT/b $d; "
             f"cat $d/etc/kernel/cmdline; umount $d")
    assert out.startswith(f"root=ZFS={POOL}/ROOT/b ")
    backend.activate(b, temporary=False)
    nothing_mounted(sh, uuids)
    for u in uuids:
        assert f"default beadm-b-{KVER}.conf" in esp_ls(u, sh, "cat loader/loader.conf")
    efi = backend.host.efivars
    assert efi.get(DEFAULT) == f"beadm-b-{KVER}.conf"
    assert backend.boot_state([a, b]).next_boot == "b"
    assert backend.check([a, b]) == []
    backend.activate(a, temporary=True)
    assert efi.get(ONESHOT) == f"beadm-a-{KVER}.conf"
    assert backend.boot_state([a, b]).once == "a"
    backend.activate(a, temporary=False)
    assert efi.get(ONESHOT) is None
    backend.post_destroy(b)  # (the datasets are the BE library's business)
    for u in uuids:
        files = esp_ls(u, sh, "ls beadm loader/entries").split()
        assert f"beadm-b-{KVER}.conf" not in files
        assert sum(1 for f in files if "-vmlinuz-" in f or "-initrd.img-" in f) == 2  # a's
    nothing_mounted(sh, uuids)
    efi.delete(DEFAULT)
