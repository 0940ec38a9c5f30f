"""Figures for issue 3 (printed; run with ``-s``): ESP bytes used by 1, 10 and 100 BEs sharing
the same two kernels, how many fit on a 512 MiB ESP, and ESP mounts per command.

Sizes are the lab's (lab.md): a Debian kernel of 8 MiB and an initrd with ZFS of 38 MiB.
FAT32 on a 512 MiB ESP uses 4 KiB clusters: every file costs at least one cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

from worlds.sdboot import K1, K2, UUIDS, World

KERNEL, INITRD, CLUSTER = 8 << 20, 38 << 20, 4096
ESP = 512 << 20


def allocated(root: Path) -> int:
    return sum(-(-p.stat().st_size // CLUSTER) * CLUSTER for p in root.rglob("*") if p.is_file())


def beadm_bytes(esp: Path) -> int:
    total = allocated(esp / "beadm")
    return total + sum(-(-p.stat().st_size // CLUSTER) * CLUSTER
                       for p in (esp / "loader/entries").glob("beadm-*.conf"))


def test_figures(tmp_path: Path) -> None:
    w = World(tmp_path)
    root = w.bes["rpool/ROOT/pve-1"]
    for k, seed in ((K1, b"1"), (K2, b"2")):  # realistic sizes, distinct content
        with (root / f"boot/vmlinuz-{k}").open("wb") as f:
            f.write(seed * KERNEL)
        with (root / f"boot/initrd.img-{k}").open("wb") as f:
            f.write(seed * INITRD)
    w.backend.init(w.ref("pve-1"))
    figures: dict[int, int] = {1: beadm_bytes(w.esps[UUIDS[0]])}
    n = 1
    for target in (10, 100):
        while n < target:
            n += 1
            be = tmp_path / "be" / f"be{n}"
            (be / "boot").mkdir(parents=True)
            (be / "etc/kernel").mkdir(parents=True)
            for f in (root / "boot").iterdir():
                os.link(f, be / "boot" / f.name)  # the same kernels (a clone's /boot)
            (be / "etc/kernel/cmdline").write_text("root=ZFS=rpool/ROOT/pve-1 boot=zfs\n")
            w.bes[f"rpool/ROOT/be{n}"] = be
            w.backend.post_create(w.ref(f"be{n}"))
        figures[target] = beadm_bytes(w.esps[UUIDS[0]])
    per_be = (figures[100] - figures[10]) / 90
    print("\nESP bytes used by beadm (store + entries, 4 KiB clusters), per ESP:")
    for count, used in figures.items():
        print(f"  {count:3d} BEs sharing 2 kernels: {used:>11,d} bytes ({used / 2**20:.1f} MiB)")
    print(f"  each further BE sharing them: {per_be:,.0f} bytes (two entry files)")
    proxmox = 2 * (KERNEL + INITRD)  # proxmox-boot-tool's own copies under EFI/proxmox/
    free = ESP - proxmox - figures[1]
    print(f"  512 MiB ESP (minus Proxmox's own 2 kernels): {int(free // per_be):,d} more BEs "
          f"sharing the kernels; {int((ESP - proxmox) // (KERNEL + INITRD))} distinct kernels")
    assert figures[100] < figures[1] + 100 * 2 * CLUSTER + CLUSTER
    assert len(w.files(UUIDS[0])) == 4

    # ESP mounts per command (each ESP at most once per command)
    counts = {}
    for label, fn in (
        ("create", lambda: (w.bes.__setitem__("rpool/ROOT/c", root),
                            w.backend.post_create(w.ref("c")))),
        ("activate", lambda: w.backend.activate(w.ref("c"), temporary=False)),
        ("list (EFI default set)", lambda: w.backend.boot_state(w.refs())),
        ("activate -t", lambda: w.backend.activate(w.ref("pve-1"), temporary=True)),
        ("destroy", lambda: w.backend.post_destroy(w.ref("be2"))),
        ("sync", lambda: w.backend.sync(w.refs()[:5])),
    ):
        before = w.host.esp_mounts
        fn()
        counts[label] = w.host.esp_mounts - before
    w.host.efivars.delete("LoaderEntryDefault")
    before = w.host.esp_mounts
    w.backend.boot_state(w.refs())
    counts["list (no EFI default)"] = w.host.esp_mounts - before
    print(f"ESP mounts per command ({len(UUIDS)} ESPs):")
    for label, c in counts.items():
        print(f"  {label}: {c}")
    assert counts["list (EFI default set)"] == 0
    assert all(c <= len(UUIDS) for c in counts.values())
