"""Issues 11.3 and 14.3 on real vfat and real OpenZFS: on a host whose ESPs do not all boot the
same way, ``--backend auto`` refuses every boot-changing command (exit 7, one line saying why)
before anything changes, and ``list`` shows no BE as booting next although the pool's bootfs
names one.

Run it twice: ``lab/lab test --uefi -q tests/lab/test_grub_host.py`` (UEFI: a mixed host, ESP 1
systemd-boot, ESP 2 shim + GRUB with ``EFI/proxmox/grubx64.efi``) and without ``--uefi`` (legacy
BIOS: GRUB boots, but ESP 1 has no ``grub/``, so Proxmox's refresh skips it)."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

POOL = "grubtest"
ROOT = f"{POOL}/ROOT"
UUIDS = Path("/etc/kernel/proxmox-boot-uuids")


def beadm(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI path (``--backend auto``, the real /etc/kernel, ESP mounts, efivars)."""
    from beadm.cli import Deps, main

    out, err = io.StringIO(), io.StringIO()
    argv = ["--root", ROOT, "--backend", "auto", *args]
    rc = main(argv, deps=Deps(stdin=io.StringIO(), stdout=out, stderr=err))
    return subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())


def esp_digest(part: Path, sh: Callable[..., str]) -> str:
    script = ("mkdir -p /run/grubt && mount -o ro " + str(part) + " /run/grubt && "
              "cd /run/grubt && find . -type f -exec md5sum {} + | sort; "
              "find . | sort; cd / && umount /run/grubt")
    out = sh("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
    return hashlib.sha256(out.encode()).hexdigest()


@pytest.fixture
def grub_host(pool_disks: list[Path], esps: list[tuple[Path, str]], sh: Callable[..., str],
              tmp_path: Path) -> Iterator[list[tuple[Path, str]]]:
    """ESP 1 as proxmox-boot-tool leaves a systemd-boot ESP, ESP 2 as a shim + GRUB one; both
    listed in /etc/kernel/proxmox-boot-uuids; a pool with BEs pve-1 (bootfs) and pve-2."""
    mnt = tmp_path / "esp"
    mnt.mkdir()
    for n, (part, _) in enumerate(esps[:2]):
        sh("mount", "-t", "vfat", str(part), str(mnt))
        try:
            for old in mnt.iterdir():  # exactly this layout: no leftovers of other lab tests
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            (mnt / "EFI/proxmox").mkdir(parents=True, exist_ok=True)
            if n == 0:
                (mnt / "EFI/systemd").mkdir(parents=True, exist_ok=True)
                (mnt / "loader/entries").mkdir(parents=True, exist_ok=True)
                (mnt / "loader/loader.conf").write_text("timeout 3\ndefault proxmox-*\n")
            else:
                (mnt / "EFI/proxmox/shimx64.efi").write_bytes(b"shim" * 1000)
                (mnt / "EFI/proxmox/grubx64.efi").write_bytes(b"grub" * 1000)
                (mnt / "grub").mkdir(exist_ok=True)
                (mnt / "grub/grub.cfg").write_text("# root=ZFS=grubtest/ROOT/pve-1\n")
        finally:
            sh("umount", str(mnt))
    had = UUIDS.read_text() if UUIDS.exists() else None
    UUIDS.parent.mkdir(parents=True, exist_ok=True)
    UUIDS.write_text("".join(f"{u}\n" for _, u in esps[:2]))
    subprocess.run(["zpool", "destroy", "-f", POOL], capture_output=True, check=False)
    sh("udevadm", "settle")
    sh("zpool", "create", "-f", "-R", str(tmp_path / "alt"), "-O", "mountpoint=none", POOL,
       str(pool_disks[0]))
    try:
        sh("zfs", "create", "-o", "canmount=off", ROOT)
        for be in ("pve-1", "pve-2"):
            sh("zfs", "create", "-o", "canmount=noauto", "-o", "mountpoint=/", f"{ROOT}/{be}")
        sh("zpool", "set", f"bootfs={ROOT}/pve-1", POOL)
        yield esps[:2]
    finally:
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)
        if had is None:
            UUIDS.unlink(missing_ok=True)
        else:
            UUIDS.write_text(had)


def test_grub_host_refuses_boot_changes_and_shows_no_next_boot(
        grub_host: list[tuple[Path, str]], sh: Callable[..., str]) -> None:
    uefi = Path("/sys/firmware/efi").is_dir()
    why = (f"mixed host: ESP {grub_host[1][1]} boots with GRUB" if uefi
           else f"ESP {grub_host[0][1]} has no GRUB (no grub/ directory)")
    print(f"booted in {'UEFI' if uefi else 'legacy BIOS'} mode; expecting {why!r}")
    before = [esp_digest(part, sh) for part, _ in grub_host]
    props = ("zfs", "get", "-H", "-r", "-t", "all", "-o", "name,property,value",
             "canmount,mountpoint,origin,org.beadm:next,org.beadm:state", POOL)
    zfs_before = sh(*props)
    changing = [("activate", "pve-2"), ("activate", "-t", "pve-2"), ("create", "pve-3"),
                ("rename", "pve-2", "pve-4"), ("destroy", "-F", "pve-2"), ("init", "pve-1"),
                ("sync",), ("migrate",)]
    for args in changing:
        res = beadm(*args)
        print(f"beadm {' '.join(args)} -> {res.returncode}: {res.stderr.strip()}")
        assert res.returncode == 7, (args, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and why in lines[0], (args, res.stderr)
    res = beadm("sync", "--if-used")  # what the hooks run: a quiet no-op here
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), res
    listed = beadm("list", "-H")
    assert listed.returncode == 0, listed.stderr
    flags = {ln.split("\t")[0]: ln.split("\t")[1] for ln in listed.stdout.splitlines()}
    print(listed.stdout, listed.stderr)
    assert flags == {"pve-1": "-", "pve-2": "-"}  # no N (root is not ZFS here), no R
    assert why in listed.stderr
    assert sh("zpool", "get", "-H", "-o", "value", "bootfs", POOL).strip() == f"{ROOT}/pve-1"
    assert sh(*props) == zfs_before
    assert [esp_digest(part, sh) for part, _ in grub_host] == before
    assert "/run/grubt" not in Path("/proc/mounts").read_text()
    assert "vfat" not in Path("/proc/self/mounts").read_text()
