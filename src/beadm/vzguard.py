"""The destroy guard for ``/var/lib/vz``: a BE may hold the only copy of a backup or a guest.

On installs older than 8.1.5 ``/var/lib/vz`` (local storage: vzdump backups, ISOs,
container templates, guest disks and container root file systems, snippets) is a directory
of the BE. Destroying a BE destroys the backups taken and the guests created on that storage
while it ran unless the same files (same name and size) are under the running system's
``/var/lib/vz`` or in another BE. :func:`unique_files` finds those files; the BEs are
looked at through temporary read-only mounts (:mod:`beadm.peek`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from beadm import confined
from beadm import mounts as mnt
from beadm.errors import RefusedError
from beadm.peek import Plan, look_into
from beadm.runner import Runner

VZ = "/var/lib/vz"
#: Where Proxmox's local storage keeps what cannot be downloaded again: backups, ISOs,
#: templates, VM disks and container volumes (``images/``; ``private/`` of old installs),
#: snippets (hook scripts, cloud-init) and imported disk images.
CONTENT_DIRS = ("dump", "template/iso", "template/cache", "images", "private", "snippets",
                "import")
SHOWN = 3


def content(vz: Path | None) -> dict[str, int]:
    """``dump/x.vma.zst`` -> size, for every regular file in the content dirs of ``vz``
    (None: no such directory). A content dir reached through a link is skipped, as are
    links below it (never followed out of the tree)."""
    out: dict[str, int] = {}
    if vz is None:
        return out
    for sub in CONTENT_DIRS:
        top = confined.plain_dir(vz, sub)
        if top is None:
            continue
        for dirpath, _, filenames in os.walk(top):
            for name in filenames:
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    out[str(p.relative_to(vz))] = p.stat().st_size
    return out


def minus(files: Mapping[str, int], other: Mapping[str, int]) -> dict[str, int]:
    """The files of ``files`` not in ``other`` with the same name and size."""
    return {k: v for k, v in files.items() if other.get(k) != v}


def message(be: str, files: Sequence[str]) -> str:
    shown = ", ".join(f"{VZ}/{f}" for f in sorted(files)[:SHOWN])
    more = f" and {len(files) - SHOWN} more" if len(files) > SHOWN else ""
    return (
        f"BE {be} holds files found nowhere else: {shown}{more}; copy them to {VZ} "
        f"(beadm mount {be}) or destroy with -F"
    )


def unique_files(
    runner: Runner,
    be: Plan,
    others: Sequence[Plan],
    mounts: Sequence[mnt.Mount],
    *,
    live: Path = Path(VZ),
    views: Mapping[str, Callable[[], Path | None]] | None = None,
) -> list[str]:
    """Files in the content dirs of the BE ``be``'s ``/var/lib/vz`` that are neither under
    ``live`` nor in one of the ``others`` BEs (same name and size). ``views``: by BE root
    dataset, a mount of it the caller's session holds (see :func:`beadm.peek.look_into`)."""
    views = views or {}
    with look_into(runner, be, mounts, (VZ,), view=views.get(be[0][0])) as top:
        files = content(confined.resolve(top, VZ))  # as the BE sees it (beadm.confined)
    files = minus(files, content(live))
    for plan in others:
        if not files:
            break
        with look_into(runner, plan, mounts, (VZ,), view=views.get(plan[0][0])) as top:
            files = minus(files, content(confined.resolve(top, VZ)))
    return sorted(files)


def refuse_unique(
    runner: Runner, name: str, be: Plan, others: Sequence[Plan], mounts: Sequence[mnt.Mount],
    *, live: Path = Path(VZ), views: Mapping[str, Callable[[], Path | None]] | None = None,
) -> None:
    """Raise :class:`RefusedError` naming the files only the BE ``name`` holds."""
    files = unique_files(runner, be, others, mounts, live=live, views=views)
    if files:
        raise RefusedError(message(name, files))
