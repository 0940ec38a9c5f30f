"""The systemd drop-ins that the shared datasets need in every BE (beadm.pvestate).

A unit that writes a shared path (``pve-cluster``, ``corosync``) must not start on the
empty directory the BE has under it before its dataset is mounted: :func:`dropins` names
the drop-in of each such unit, :func:`write_units` writes them into a BE (inside it only,
:mod:`beadm.confined`). :func:`prepare_be` gives one BE the drop-ins of the shared datasets
in service (:func:`beadm.pvestate.in_use`): ``create`` and ``activate`` call it for a BE
cloned from a snapshot taken before the move, which also keeps its own unused copy of the
state (:func:`own_copies`).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Container, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TextIO

from beadm import confined, pvestate
from beadm import mounts as mnt
from beadm.pvestate import SHARED, SharedPath
from beadm.record import record
from beadm.runner import Runner
from beadm.zfs import Zfs

DROPIN_NAME = "beadm-shared-state.conf"


def dropin_text(paths: Sequence[str]) -> str:
    """The systemd drop-in that keeps a unit from starting on an empty directory."""
    lines = [
        "# Written by beadm: these paths are datasets shared by every boot environment",
        "# (see beadm(8), SHARED STATE). Do not start before they are mounted.",
        "[Unit]",
        "After=zfs-mount.service",
    ]
    lines += [f"RequiresMountsFor={p}" for p in paths]
    lines += [f"AssertPathIsMountPoint={p}" for p in paths]
    return "\n".join(lines) + "\n"


def dropins(moved: Container[str], shared: Sequence[SharedPath] = SHARED) -> dict[str, str]:
    """Unit -> drop-in text, for the units that need a shared path that has been moved."""
    need: dict[str, list[str]] = {}
    for sp in shared:
        if sp.path in moved:
            for unit in sp.needed_by:
                need.setdefault(unit, []).append(sp.path)
    return {u: dropin_text(ps) for u, ps in sorted(need.items())}


def write_units(root: Path, units: dict[str, str], *, dry_run: bool, out: TextIO) -> list[Path]:
    """Write each unit's drop-in under the BE mounted at ``root`` where it is missing or
    differs; each file appears whole or not at all (a temporary file renamed over it).
    Returns the drop-ins written (with ``dry_run``: that would be). Inside the BE only
    (:mod:`beadm.confined`: a link where it writes is refused, never followed)."""
    written: list[Path] = []
    for unit, text in units.items():
        rel = f"etc/systemd/system/{unit}.d/{DROPIN_NAME}"
        path = root / rel
        with suppress(OSError):
            if confined.read_text(root, rel, errors="replace") == text:
                continue
        written.append(path)
        if dry_run:
            print(f"would write {path}", file=out)
            continue
        confined.write_file(root, rel, text.encode("utf-8"), fsync=False)
    return written


def own_copies(root: Path, paths: Sequence[str]) -> list[str]:
    """The shared ``paths`` of which the BE root mounted (alone) at ``root`` keeps files of its
    own: hidden under the shared dataset at boot, never used (a BE cloned from a snapshot
    taken before the move)."""
    found: list[str] = []
    for path in paths:
        with suppress(OSError):  # read inside the BE only (beadm.confined)
            if confined.readlink(root, path) is None and confined.is_dir(root, path) \
                    and confined.listdir(root, path):
                found.append(path)
    return found


@record
class BeState:
    """What :func:`prepare_be` did to one BE."""

    written: tuple[Path, ...]  # drop-ins written (in a dry run: that would be)
    hidden: tuple[str, ...]  # shared paths of which the BE keeps an unused copy of its own


def prepare_be(
    runner: Runner,
    be_dataset: str,
    paths: Sequence[str],
    *,
    mountinfo: Path = mnt.MOUNTINFO,
    root_dir: str | None = None,
    tmpdir: str | None = None,
    out: TextIO | None = None,
    shared: Sequence[SharedPath] = SHARED,
    view: Callable[[bool], Path | None] | None = None,
) -> BeState:
    """Give the BE ``be_dataset`` the drop-ins that the shared ``paths`` (see :func:`in_use`)
    need, where it lacks them, and find its own copies of those paths.

    A BE cloned from a snapshot taken before ``init --shared-state`` has neither the
    drop-ins nor an empty directory under the shared mounts. The BE is looked at where it
    is mounted (the running one at ``root_dir``), else through a temporary mount of its
    root dataset alone (read-only in a dry run, which writes nothing): the one ``view``
    gives (``view(writable)``: the backend's session mounts it for the same command), if
    any, else a mount of its own."""
    units = dropins(paths, shared)
    if not units:
        return BeState((), ())
    dry = runner.dry_run
    say = out if out is not None else sys.stdout
    where = mnt.zfs_mounts(mnt.read_mounts(mountinfo)).get(be_dataset)
    if where:
        top = where[-1]
        if top == "/":
            root = Path(root_dir if root_dir is not None else pvestate.ROOT_DIR)
            return BeState(tuple(write_units(root, units, dry_run=dry, out=say)), ())
        written = write_units(Path(top), units, dry_run=dry, out=say)
        return BeState(tuple(written), tuple(own_copies(Path(top), paths)))
    got = view(not dry) if view is not None else None
    if got is not None:
        written = write_units(got, units, dry_run=dry, out=say)
        return BeState(tuple(written), tuple(own_copies(got, paths)))
    tmp = tempfile.mkdtemp(prefix="beadm-", dir=tmpdir)
    try:
        Zfs(runner).mount_at(be_dataset, tmp, ro=dry, readonly=dry)
        try:
            written = write_units(Path(tmp), units, dry_run=dry, out=say)
            hidden = own_copies(Path(tmp), paths)
        finally:
            runner.run(["umount", tmp], readonly=dry)
    finally:
        with suppress(OSError):
            Path(tmp).rmdir()
    return BeState(tuple(written), tuple(hidden))

