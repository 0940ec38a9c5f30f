"""A BE's own GRUB command line: ``root=ZFS=`` in its ``/etc/default/grub.d/zfs.cfg``.

The Proxmox installer writes ``GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX root=ZFS=rpool/ROOT/pve-1
boot=zfs"`` there; ``update-grub`` (``proxmox-boot-tool refresh``) run inside a BE puts it after
10_linux's own ``root=``, and the last ``root=`` wins. A clone keeps its origin's file, so
Proxmox's own GRUB entries regenerated from the clone would boot the origin: every BE's file
must name the BE itself. Only ``root=ZFS=<dataset>`` words are changed; the rest is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

from beadm import confined

ZFS_CFG = "etc/default/grub.d/zfs.cfg"
_ROOT = re.compile(r"root=ZFS=[^\s\"']+")


def wanted(text: str, dataset: str) -> str:
    return _ROOT.sub(f"root=ZFS={dataset}", text)


def drift(root: Path, dataset: str) -> str | None:
    """Why BE ``root``'s zfs.cfg is wrong for ``dataset`` (None: right, or no such file)."""
    try:
        text = _read(root)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # a link loop, not a regular file, unreadable
        return f"/{ZFS_CFG}: {confined.why(exc)}"
    if wanted(text, dataset) == text:
        return None
    found = sorted(set(_ROOT.findall(text)))
    return f"/{ZFS_CFG} says {' '.join(found)}, should be root=ZFS={dataset}"


def _read(root: Path) -> str:
    """The BE's own zfs.cfg (:mod:`beadm.confined`: a link is followed inside the BE only;
    a link to a file outside it is a missing file)."""
    return confined.read_text(root, ZFS_CFG)


def fix(root: Path, dataset: str) -> bool:
    """Rewrite the file (temporary file + rename, mode kept) when it names another root;
    inside the BE only (a link where it writes is refused, never followed)."""
    try:
        text = _read(root)
    except (FileNotFoundError, NotADirectoryError):
        return False
    new = wanted(text, dataset)
    if new == text:
        return False
    confined.write_file(root, ZFS_CFG, new.encode("utf-8"), fsync=False)
    return True
