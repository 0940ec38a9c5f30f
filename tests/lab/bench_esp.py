#!/usr/bin/env python3
"""Benchmark (not a test): issue 3's ESP figures on real FAT32, through the real CLI.

Run in the lab VM (``--uefi`` so that EFI variables exist):
``lab/lab run --uefi --timeout 3600 -- python3 tests/lab/bench_esp.py [BES]``.

It reformats ESP 1 the way ``mkfs.vfat -F 32`` does by default (4 KiB clusters on 512 MiB)
and leaves ESP 2 as the lab made it (512-byte clusters), lists both in
``/etc/kernel/proxmox-boot-uuids`` (the VM's root is a throw-away snapshot), builds a pool
whose BE ``pve-1`` has two kernels of the lab's real sizes (8 MiB kernel, 38 MiB initrd,
random bytes), runs ``beadm init pve-1`` and ``beadm create -e pve-1 beN`` up to BES BEs
(default 100), and prints each ESP's used bytes (statvfs) after 1, 10 and BES BEs, how many
such BEs fit on a 512 MiB ESP, and how many times each command mounted an ESP (counted from
``beadm -v``'s command log: every ``mount -t vfat``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POOL = "rpool"
ROOT = f"{POOL}/ROOT"
SRC = Path(__file__).resolve().parents[2] / "src"
KERNELS = ("6.1.0-90-amd64", "6.1.0-91-amd64")
KERNEL, INITRD = 8 << 20, 38 << 20
ESP_BYTES = 512 << 20
FAT_DIR_SLOTS = 65536  # FAT: at most 65,536 32-byte slots in one directory
ESPS = [Path("/dev/disk/by-id/virtio-esp1-part1"), Path("/dev/disk/by-id/virtio-esp2-part1")]
UUIDS = ["1111-AAAA", "2222-BBBB"]


def sh(*argv: str) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


def beadm(*args: str) -> int:
    """Run ``beadm -v ARGS``; return how many ESP mounts its command log shows."""
    argv = [sys.executable, "-m", "beadm", "-v", "--root", ROOT, "--backend", "systemd-boot",
            *args]
    res = subprocess.run(argv, capture_output=True, text=True, check=False,
                         env=dict(os.environ, PYTHONPATH=str(SRC)))
    if res.returncode != 0:
        raise SystemExit(f"beadm {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
    return len(re.findall(r"run: mount -t vfat ", res.stderr))


def esp_usage() -> list[tuple[int, int, int]]:
    """(used bytes, cluster bytes, entries in loader/entries) per ESP, mounted read-only."""
    out = []
    with tempfile.TemporaryDirectory() as d:
        for dev in ESPS:
            sh("mount", "-t", "vfat", "-o", "ro", str(dev), d)
            try:
                st = os.statvfs(d)
                used = (st.f_blocks - st.f_bfree) * st.f_frsize
                entries = len(list(Path(d, "loader/entries").glob("*.conf")))
                out.append((used, st.f_frsize, entries))
            finally:
                sh("umount", d)
    return out


def main() -> int:
    n_bes = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    marks = sorted({1, 10, n_bes} - {0})
    sh("mkfs.vfat", "-F", "32", "-i", UUIDS[0].replace("-", ""), "-n", "ESP1", str(ESPS[0]))
    sh("udevadm", "settle")
    Path("/etc/kernel").mkdir(exist_ok=True)
    Path("/etc/kernel/proxmox-boot-uuids").write_text("\n".join(UUIDS) + "\n")
    empty = esp_usage()
    alt = Path("/mnt/bench")
    sh("zpool", "create", "-f", "-R", str(alt), "-O", "mountpoint=none", POOL,
       "/dev/disk/by-id/virtio-pool1")
    try:
        sh("zfs", "create", "-o", "canmount=off", ROOT)
        sh("zfs", "create", "-o", "mountpoint=/", "-o", "canmount=noauto", f"{ROOT}/pve-1")
        sh("zfs", "mount", f"{ROOT}/pve-1")
        (alt / "boot").mkdir()
        (alt / "etc/kernel").mkdir(parents=True)
        for k in KERNELS:
            (alt / f"boot/vmlinuz-{k}").write_bytes(os.urandom(KERNEL))
            (alt / f"boot/initrd.img-{k}").write_bytes(os.urandom(INITRD))
        (alt / "etc/kernel/cmdline").write_text(f"root=ZFS={ROOT}/pve-1 boot=zfs\n")
        sh("zfs", "umount", f"{ROOT}/pve-1")
        sh("zpool", "set", f"bootfs={ROOT}/pve-1", POOL)

        mounts: dict[str, int] = {"init": beadm("init", "pve-1")}
        figures = {1: esp_usage()}
        t0 = time.monotonic()
        for i in range(2, n_bes + 1):
            m = beadm("create", "-e", "pve-1", f"be{i}")
            if i == 2:
                mounts["create"] = m
            if i in marks:
                figures[i] = esp_usage()
                print(f"{i} BEs: used per ESP {[u for u, _, _ in figures[i]]}", flush=True)
        per_create = (time.monotonic() - t0) / max(1, n_bes - 1)
        mounts["activate"] = beadm("activate", "be2")
        mounts["list (LoaderEntryDefault set)"] = beadm("list")
        mounts["activate -t"] = beadm("activate", "-t", "pve-1")
        mounts["destroy"] = beadm("destroy", "-F", f"be{n_bes}")
        mounts["sync"] = beadm("sync")
        mounts["check"] = beadm("check")
        efivars = Path("/sys/firmware/efi/efivars")
        var = next(efivars.glob("LoaderEntryDefault-*"), None) if efivars.is_dir() else None
        if var is not None:
            subprocess.run(["chattr", "-i", str(var)], check=False)
            var.unlink()
            mounts["list (no LoaderEntryDefault)"] = beadm("list")
        elif not efivars.is_dir():
            print("(no efivarfs: start the VM with --uefi for the EFI-variable figures)")

        print(f"\nESP usage (statvfs, real FAT32; two kernels of {KERNEL >> 20} + "
              f"{INITRD >> 20} MiB shared by every BE; {per_create:.1f} s per create):")
        for n, (base, cluster, _) in enumerate(empty, 1):
            print(f"  ESP {n} ({cluster} B clusters), empty: {base:,d} bytes used")
            for count, usage in figures.items():
                used, _, entries = usage[n - 1]
                print(f"    {count:4d} BEs: {used - base:>12,d} bytes by beadm "
                      f"({(used - base) / 2**20:6.1f} MiB), {entries} entries")
            lo, hi = min(figures), max(figures)
            per_be = (figures[hi][n - 1][0] - figures[lo][n - 1][0]) / max(1, hi - lo)
            first = figures[lo][n - 1][0] - base
            proxmox = 2 * (KERNEL + INITRD)  # proxmox-boot-tool's own two kernels
            room = ESP_BYTES - base - proxmox - first
            by_space = int(room // per_be) if per_be else 0
            # an entry name beadm-beNNNN-6.1.0-90-amd64.conf: 1 short + 3 long-name slots
            by_dir = FAT_DIR_SLOTS // 4 // len(KERNELS)
            print(f"    each further BE: {per_be:,.0f} bytes; next to Proxmox's own two kernels "
                  f"a 512 MiB ESP has room for ~{by_space:,d} more by space, ~{by_dir:,d} BEs "
                  f"by the FAT directory limit of loader/entries")
        print(f"ESP mounts per command ({len(ESPS)} ESPs):")
        for what, count in mounts.items():
            print(f"  {what:32s} {count}")
    finally:
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
