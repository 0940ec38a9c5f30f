"""What the BE verbs share: the ``org.beadm:state`` marks of a BE and the small checks
and helpers every verb module uses (no state: the context is :mod:`beadm.bectx`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from beadm.errors import ExistsError, InvalidNameError, UsageError
from beadm.names import MAX_DATASET_LEN, same_but_case
from beadm.tree import BootEnv, Tree
from beadm.zfs import Dataset

if TYPE_CHECKING:
    import datetime as dt

log = logging.getLogger("beadm.be")

STATE_CREATING = "creating"
#: ``org.beadm:state`` of a BE root while ``rename`` runs: ``renaming:OLD``. A killed rename
#: leaves it; the next changing command finishes the rename (bootfs, backend) or, if the
#: datasets still carry the old name, only clears it.
STATE_RENAMING = "renaming:"
#: ``org.beadm:state`` of a BE root while ``upgrade`` runs apt in it; a killed upgrade leaves
#: it, and the next changing command turns it into ``failed``.
STATE_UPGRADING = "upgrading"
#: ``org.beadm:state`` of a BE whose upgrade failed: listed, not activated without
#: ``--force``, left out of ``sync`` (no boot entries); ``destroy`` removes it.
STATE_FAILED = "failed"
#: States of a BE that boots nothing (no entries written for it).
#: ``org.beadm:state`` of an automatic BE that ``prune`` destroys: set before its boot
#: entries go, so a kill leaves a BE the next changing command finishes destroying (never
#: entries of a BE whose datasets are gone, nor a half-destroyed BE that looks bootable).
STATE_DESTROYING = "destroying"
NOT_BOOTABLE = frozenset({STATE_CREATING, STATE_UPGRADING, STATE_FAILED, STATE_DESTROYING})
#: States of a BE that is no BE (any more): not listed, removed by the next changing command.
_STALE = frozenset({STATE_CREATING, STATE_DESTROYING})
MAX_DESCRIPTION_LEN = 1024
#: ``org.beadm:auto`` of the BEs ``beadm upgrade`` makes.
AUTO_UPGRADE = "upgrade"


def _now() -> dt.datetime:
    import datetime

    return datetime.datetime.now()


def _bootable(tree: Tree) -> list[BootEnv]:
    """The BEs that get boot entries: not half-created, not a failed or running upgrade."""
    return [b for b in tree.bes() if b.root.state not in NOT_BOOTABLE]


@contextmanager
def _suppressed(what: str) -> Iterator[None]:
    """A clean-up step after a failure: its own error is a warning, never the error."""
    try:
        yield
    except Exception as exc:  # the first error is the one to report
        log.warning("warning: %s failed: %s", what, exc)


def _rmdir(path: str) -> None:
    try:
        Path(path).rmdir()
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc.strerror)


def _mount_plan(be: BootEnv) -> list[tuple[Dataset, str]]:
    """(dataset, path relative to the mount directory), parents first."""
    plan: list[tuple[Dataset, str]] = [(be.root, "")]
    top = be.root.mountpoint
    for d in be.datasets[1:]:
        if d.canmount == "off" or d.mountpoint in ("", "none", "legacy"):
            continue
        mp = d.mountpoint
        if top == "/" and mp.startswith("/") and mp != "/":
            rel = mp
        elif top not in ("", "none", "legacy") and mp.startswith(top.rstrip("/") + "/"):
            rel = mp[len(top.rstrip("/")) :]
        else:
            rel = d.name[len(be.dataset) :]
        plan.append((d, rel))
    plan.sort(key=lambda p: (p[1].count("/"), p[1]))
    return plan


def _unprintable(text: str) -> bool:
    """True if ``text`` holds a character that is not printable: control characters
    (``\t``, ``\n``, ``\x0b``, ``\x1c``, ``\x85``, ...), line and paragraph separators
    (U+2028/9), undecodable bytes (lone surrogates from a non-UTF-8 argument)."""
    return not text.isprintable()


def _check_description(description: str) -> None:
    if len(description) > MAX_DESCRIPTION_LEN:
        raise UsageError(f"description longer than {MAX_DESCRIPTION_LEN} characters")
    if _unprintable(description):
        raise UsageError("description must be one line of printable characters "
                         "(no tab, newline or other control character)")


def _refuse_case_clash(name: str, existing: list[str]) -> None:
    other = same_but_case(name, existing)
    if other is not None:
        raise ExistsError(
            f"BE {other} exists and differs from {name} only in case "
            "(boot entry file names on the ESPs are case-insensitive)"
        )


def _check_len(name: str) -> None:
    if len(name) > MAX_DATASET_LEN:
        raise InvalidNameError(
            f"dataset name {name[:40]}... would exceed {MAX_DATASET_LEN} characters"
        )
