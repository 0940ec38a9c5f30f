"""The kernels a BE boots: ``vmlinuz-<kver>`` + ``initrd.img-<kver>`` pairs in its /boot."""

from __future__ import annotations

import re
from pathlib import Path

from beadm import confined
from beadm.record import record

BOOT = "boot"
MAX_KERNELS = 2  # newest kernels per BE put on the ESPs (plus the running and pinned ones)
#: Proxmox's kernel pins, in a root's /etc/kernel (``proxmox-boot-tool kernel pin V
#: [--next-boot]``): the one-boot pin first; ``proxmox-boot-cleanup.service`` removes it
#: at the boot after.
PIN_FILES = ("etc/kernel/next-boot-pin", "etc/kernel/proxmox-boot-pin")


@record
class Kernel:
    kver: str
    vmlinuz: Path
    initrd: Path


def version_key(v: str) -> tuple[tuple[int, int | str], ...]:
    """Natural sort key: digit runs compare as numbers (6.10 > 6.9)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p)
                 for p in re.findall(r"\d+|[^\d]+", v))


@record
class Pin:
    """A kernel pin of Proxmox's in a BE: ``once`` for ``--next-boot`` (next-boot-pin)."""

    kver: str
    once: bool


def pin_of(root: Path) -> Pin | None:
    """The pin Proxmox's files in BE ``root`` set (the next-boot pin first)."""
    for rel in PIN_FILES:
        try:
            text = confined.read_text(root, rel, errors="replace")
        except OSError:
            continue
        words = text.split()
        if words:
            return Pin(words[0], once=rel.endswith("next-boot-pin"))
    return None


def pinned(root: Path) -> str | None:
    """The kernel version Proxmox's pin files in BE ``root`` name (next-boot pin first)."""
    pin = pin_of(root)
    return pin.kver if pin else None


def find(root: Path, *, keep: str | None = None, limit: int = MAX_KERNELS,
         pin: str | None = None) -> list[Kernel]:
    """Kernels in the ``/boot`` of the BE at ``root`` that have an initrd, newest first:
    ``limit`` newest plus ``keep`` and ``pin``.

    Each file must be a regular file reached inside the BE (:func:`beadm.confined.regular`:
    a link is followed as the BE sees it, never out of it); the paths returned have no
    link left in them (the store opens them without following one)."""
    found: list[Kernel] = []
    try:
        names = confined.listdir(root, BOOT)
    except OSError:
        return []
    for name in names:
        if not name.startswith("vmlinuz-"):
            continue
        kver = name[len("vmlinuz-") :]
        vml = confined.regular(root, f"{BOOT}/{name}")
        ird = confined.regular(root, f"{BOOT}/initrd.img-{kver}")
        if vml is not None and ird is not None:
            found.append(Kernel(kver, vml, ird))
    found.sort(key=lambda k: version_key(k.kver), reverse=True)
    chosen = found[:limit]
    chosen += [k for k in found[limit:] if k.kver in (keep, pin)]
    return chosen
