"""beadm: boot environments for Proxmox VE hosts whose root is on ZFS.

The library's one public face (as FreeBSD's libbe has ``be.h``)::

    import beadm

    with beadm.open(backend="auto") as bes:
        done = bes.activate("pve-2")  # a beadm.Done: what changed, and its warnings
        for line in done.warnings:
            print("warning:", line)

:func:`open` gives a :class:`BeManager` (one method per command, each returning its
result: :class:`Done`, :class:`Listing`, :class:`Pruned`, :class:`Upgraded`, ...); every
error is a :class:`BeadmError` of the closed set in :mod:`beadm.errors`, each with its
exit code. The names below are imported when first used: ``beadm version`` imports none.
"""

__version__ = "0.1.0"

# Nothing is imported here at start-up (``beadm version`` reads only __version__; ``typing``
# alone would import ``re``): the names come when first used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from beadm.backend import BeRef, BootState, Checked
    from beadm.be import BeManager
    from beadm.errors import (
        BeadmError,
        BootError,
        ExistsError,
        LockedError,
        NotFoundError,
        RefusedError,
        UnsupportedError,
        UsageError,
    )
    from beadm.results import AutoSnapshot, BeInfo, Done, Listing, Pruned, TrialOutcome, Upgraded

#: The public names, by the module each is imported from when first used.
_PUBLIC = {
    "BeManager": "beadm.be",
    "BeRef": "beadm.backend", "BootState": "beadm.backend", "Checked": "beadm.backend",
    "AutoSnapshot": "beadm.results", "BeInfo": "beadm.results", "Done": "beadm.results",
    "Listing": "beadm.results", "Pruned": "beadm.results", "TrialOutcome": "beadm.results",
    "Upgraded": "beadm.results",
    "BeadmError": "beadm.errors", "BootError": "beadm.errors", "ExistsError": "beadm.errors",
    "LockedError": "beadm.errors", "NotFoundError": "beadm.errors",
    "RefusedError": "beadm.errors", "UnsupportedError": "beadm.errors",
    "UsageError": "beadm.errors",
}

__all__ = [
    "AutoSnapshot", "BeInfo", "BeManager", "BeRef", "BeadmError", "BootError", "BootState",
    "Checked", "Done", "ExistsError", "Listing", "LockedError", "NotFoundError", "Pruned",
    "RefusedError", "TrialOutcome", "UnsupportedError", "Upgraded", "UsageError",
    "__version__", "open",
]


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'beadm' has no attribute {name!r}")


def open(backend: str = "auto", *, root: str | None = None, dry_run: bool = False,
         lock_wait: float = 5.0) -> "AbstractContextManager[BeManager]":
    """The BEs of this host: a manager over the real commands (one runner), the boot
    ``backend`` named as ``--backend`` names it (``auto``: systemd-boot or GRUB as
    detected, or one that refuses every boot-changing command on a host beadm cannot
    boot), the BE root (default: the parent of the dataset at ``/``) and the lock (waited
    for ``lock_wait`` seconds by each changing command). ``dry_run``: print what would
    run, change nothing. On leaving, whatever the backend still holds mounted is
    released."""
    from beadm.be import opened

    return opened(backend, root=root, dry_run=dry_run, lock_wait=lock_wait)
