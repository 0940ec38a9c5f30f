"""Every BE knows the current ESPs: the running root's ESP list carried into other BEs.

Proxmox keeps the list of ESPs it syncs (``/etc/kernel/proxmox-boot-uuids``, before 6.4
``pve-efiboot-uuids``) in each root's own ``/etc/kernel/``; ``proxmox-boot-tool init`` and
``clean`` after a disk replacement change only the running BE's copy. A BE cloned before
the replacement still lists the gone ESP and lacks the new one: booted, its Proxmox refresh
and beadm's own sync would skip the new ESP. So the running root's list is the reference
(beadm reads the ESPs from it in every command): ``create``, ``activate`` and ``sync``
write it into the target BE's ``/etc/kernel/`` when the ESP ids differ, and ``check``
reports a BE whose list differs.

One exception keeps a stale running list from spreading (``sync`` run in a BE that was not
told about a new disk, or in a chroot of an old BE): a BE's list that names an ESP whose
device is present and that the running list lacks is not replaced; ``check`` and a warning
say so.

Which file in the target: every name of the two that it holds as a regular file (each is
compared and rewritten on its own); if it holds neither, the running root's name. A write is
a temporary file in the same directory, fsynced, given the old file's mode (else the running
file's), renamed over the old one, then the directory fsynced: a kill leaves the old list or
the new one, never a torn file.
"""

from __future__ import annotations

import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from beadm import confined
from beadm.esp.host import UUID_FILES
from beadm.record import record

ETC_KERNEL = "etc/kernel"
TMP_SUFFIX = confined.TMP_SUFFIX


def ids(text: str) -> tuple[str, ...]:
    """The ESP volume ids a list names (sorted, unique; comments and blanks ignored)."""
    found = {ln.strip() for ln in text.splitlines()}
    return tuple(sorted(i for i in found if i and not i.startswith("#")))


@record
class EspList:
    """The running root's ESP list: its file name, text, ids and mode."""

    name: str
    text: str
    ids: tuple[str, ...]
    mode: int

    @staticmethod
    def of(etc_kernel: Path) -> EspList | None:
        """The list beadm reads the ESPs from (the first name that exists, as
        :func:`beadm.esp.host.read_uuids`); None when there is none or it lists no ESP."""
        for name in UUID_FILES:
            path = etc_kernel / name
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                found = ids(text)
                if not found:
                    return None
                return EspList(name, text, found, stat.S_IMODE(path.stat().st_mode))
        return None


@record
class Drift:
    """One list file of a BE that names other ESPs than the running root's (``have`` is
    None when the BE has no list at all)."""

    path: Path
    have: tuple[str, ...] | None

    def would_drop(self, want: EspList, present: Callable[[str], bool]) -> tuple[str, ...]:
        """ESPs this file names, the running list lacks, and whose device is there: a sign
        that the running list is the stale one."""
        return tuple(u for u in self.have or () if u not in want.ids and present(u))


def drift(root: Path, want: EspList) -> list[Drift]:
    """The list files in the BE tree at ``root`` that differ from ``want`` (see module doc;
    read inside the BE only, :mod:`beadm.confined`)."""
    etc = root / ETC_KERNEL
    present = [n for n in UUID_FILES
               if confined.readlink(root, f"{ETC_KERNEL}/{n}") is None
               and confined.is_file(root, f"{ETC_KERNEL}/{n}")]
    if not present:
        return [Drift(etc / want.name, None)]
    out = []
    for name in present:
        have = ids(confined.read_text(root, f"{ETC_KERNEL}/{name}", errors="replace"))
        if have != want.ids:
            out.append(Drift(etc / name, have))
    return out


def describe(be: str, d: Drift, want: EspList, kept: tuple[str, ...] = ()) -> str:
    """A ``check`` line for one drifting list file (``kept``: see :meth:`Drift.would_drop`)."""
    names = ", ".join(want.ids)
    if d.have is None:
        return f"BE {be}: has no ESP list (the running BE's lists {names})"
    line = (f"BE {be}: /{ETC_KERNEL}/{d.path.name} lists {', '.join(d.have) or 'no ESP'}, "
            f"the running BE's lists {names}")
    if kept:
        line += (f"; ESP {', '.join(kept)} is present but not in the running BE's list, so "
                 "beadm leaves this file alone (if it is in use, run 'proxmox-boot-tool "
                 "init' on it in the running BE)")
    return line


def write(root: Path, rel: str, want: EspList) -> None:
    """Replace ``rel`` in the BE at ``root`` by the running root's list, crash-safe (see
    module doc), inside the BE only (:mod:`beadm.confined`: a link there is refused)."""
    try:
        mode = stat.S_IMODE(confined.stat(root, rel).st_mode)
    except FileNotFoundError:
        mode = want.mode
    confined.write_file(root, rel, want.text.encode("utf-8"), mode=mode)


def carry(root: Path, drifts: list[Drift], want: EspList, *, dry_run: bool = False,
          out: TextIO | None = None) -> list[Path]:
    """Write the running root's list over each of ``drifts`` in the BE tree at ``root``
    (the BE's mount may have changed, e.g. to read-write: names are kept, not paths); the
    files written (or, with ``dry_run``, that would be)."""
    done = []
    for d in drifts:
        rel = f"{ETC_KERNEL}/{d.path.name}"
        path = root / rel
        if dry_run:
            print(f"would write {path}: ESPs {', '.join(want.ids)} (the running BE's list)",
                  file=out if out is not None else sys.stdout)
        else:
            write(root, rel, want)
        done.append(path)
    return done
