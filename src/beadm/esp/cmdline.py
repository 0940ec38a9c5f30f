"""A BE's own kernel command line (``/etc/kernel/cmdline`` inside the BE).

Only the first line counts (Proxmox's rule). beadm replaces every ``root=`` with one
``root=ZFS=<dataset>`` at the first one's place and keeps the rest as the admin wrote
it. The old shell port's ``/etc/kernel/cmdline.template`` (``__BE_NAME`` replaced by the
BE name) is honoured when present.
"""

from __future__ import annotations

from pathlib import Path

from beadm import confined

CMDLINE = "etc/kernel/cmdline"
TEMPLATE = "etc/kernel/cmdline.template"
BE_NAME_MARK = "__BE_NAME"


def with_root(line: str, dataset: str) -> str:
    """``line`` naming ``dataset`` as root (one ``root=``), with ``boot=zfs``."""
    out: list[str] = []
    placed = False
    for tok in line.split():
        if tok.startswith("root="):
            if not placed:
                out.append(f"root=ZFS={dataset}")
                placed = True
            continue
        if tok.startswith(("initrd=", "BOOT_IMAGE=")):
            continue  # set by the loader, never part of /etc/kernel/cmdline
        out.append(tok)
    if not placed:
        out.insert(0, f"root=ZFS={dataset}")
    if "boot=zfs" not in out:
        out.append("boot=zfs")
    return " ".join(out)


def first_line(root: Path, rel: str = CMDLINE) -> str | None:
    """The first line of ``rel`` in the BE at ``root`` (None: no such file); read inside
    the BE (:mod:`beadm.confined`: a link out of it is not followed)."""
    try:
        text = confined.read_text(root, rel, errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def wanted(root: Path, be_name: str, dataset: str, fallback: str | None = None) -> str:
    """The command line BE ``be_name`` (tree at ``root``) must carry.

    From the template if there is one, else its current file, else ``fallback`` (the
    running system's ``/proc/cmdline``), else the installer's minimal line.
    """
    template = first_line(root, TEMPLATE)
    if template is not None:
        base = template.replace(BE_NAME_MARK, be_name)
    else:
        current = first_line(root)
        base = current if current else (fallback or "")
    return with_root(base, dataset)
