"""The kernels a BE boots: ``vmlinuz-<kver>`` + ``initrd.img-<kver>`` pairs in its /boot."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MAX_KERNELS = 2  # newest kernels per BE put on the ESPs (plus the running one)


@dataclass(frozen=True)
class Kernel:
    kver: str
    vmlinuz: Path
    initrd: Path


def version_key(v: str) -> tuple[tuple[int, int | str], ...]:
    """Natural sort key: digit runs compare as numbers (6.10 > 6.9)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p)
                 for p in re.findall(r"\d+|[^\d]+", v))


def find(boot: Path, *, keep: str | None = None, limit: int = MAX_KERNELS) -> list[Kernel]:
    """Kernels in ``boot`` that have an initrd, newest first: ``limit`` newest plus ``keep``."""
    found: list[Kernel] = []
    try:
        names = sorted(p.name for p in boot.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        if not name.startswith("vmlinuz-"):
            continue
        kver = name[len("vmlinuz-") :]
        vml, ird = boot / name, boot / f"initrd.img-{kver}"
        if vml.is_file() and ird.is_file():
            found.append(Kernel(kver, vml, ird))
    found.sort(key=lambda k: version_key(k.kver), reverse=True)
    chosen = found[:limit]
    chosen += [k for k in found[limit:] if k.kver == keep]
    return chosen
