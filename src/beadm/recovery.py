"""What a killed command left, finished or removed by the next changing command:
half-created or half-destroyed BEs, interrupted renames and upgrades."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from beadm import destroy, mountbe
from beadm.backend import BeRef
from beadm.becommon import _STALE, STATE_CREATING, STATE_FAILED, STATE_RENAMING, STATE_UPGRADING
from beadm.errors import BeadmError
from beadm.tree import BootEnv, Tree
from beadm.zfs import PROP_STATE

if TYPE_CHECKING:
    from beadm.bectx import BeContext

log = logging.getLogger("beadm.be")  # the BE library's one logger, whichever verb logs


def cleanup_stale(ctx: BeContext, tree: Tree) -> Tree:
    """Remove what a killed ``create`` left: BEs and snapshots marked creating; finish
    what a killed ``rename`` or ``prune`` left; mark a killed upgrade failed.

    Each of these that fails is a warning, never the command's error (the command did
    not ask for it; its mark stays and the next changing command tries again): a BE
    that cannot be destroyed (busy, held) must not stop ``sync --if-used`` giving new
    kernels their entries, nor ``activate``, ``destroy`` or ``prune``."""
    failed: list[bool] = []

    @contextmanager
    def step(what: str) -> Iterator[None]:
        try:
            yield
        except BeadmError as exc:
            failed.append(True)
            log.warning("warning: %s failed (the next changing command tries again): %s",
                        what, exc)

    finish_renames(ctx, tree, step)
    for be in tree.bes():
        if be.root.state == STATE_UPGRADING:  # its beadm is gone: it held the lock
            log.warning("warning: the upgrade in BE %s was interrupted: marking it failed "
                        "(beadm destroy %s removes it)", be.name, be.name)
            with step(f"marking BE {be.name} failed"):
                ctx.zfs.set(be.dataset, PROP_STATE, STATE_FAILED)
    stale = [b for b in tree.bes() if b.root.state in _STALE]
    stale_ds = {d.name for b in stale for d in b.datasets}
    marked_snaps = [d for d in tree.items if d.is_snapshot and d.state == STATE_CREATING]
    marked_fs = [
        d for d in tree.fs.values() if d.state == STATE_CREATING and d.name not in stale_ds
    ]
    if not (stale or marked_snaps or marked_fs):
        return tree
    gone: set[str] = set()
    for be in stale:
        half = "created" if be.root.state == STATE_CREATING else "destroyed"
        log.warning("removing half-%s BE %s", half, be.name)
        with step(f"removing half-{half} BE {be.name}"):
            mountbe.unmount_be(ctx, be, force=True)
            gone |= destroy.destroy_be(ctx, tree, be, remove_origin=False, beadm_only=True)
    for s in marked_snaps:
        if s.name in gone or s.dataset in gone:
            continue
        with step(f"removing half-created snapshot {s.name}"):
            if set(s.clones) - gone:
                ctx.zfs.inherit(s.name, PROP_STATE)
            else:
                log.warning("removing half-created snapshot %s", s.name)
                ctx.zfs.destroy(s.name)
                gone.add(s.name)
    for d in marked_fs:
        with step(f"clearing the creating mark of {d.name}"):
            ctx.zfs.inherit(d.name, PROP_STATE)
    # after a failure, what is left is read again (a destroy may have gone half-way)
    return ctx._tree() if failed else tree.without(gone)


def finish_renames(ctx: BeContext, tree: Tree,
                   step: Callable[[str], AbstractContextManager[None]]) -> None:
    """Finish what a killed ``rename`` left (BE roots marked ``renaming:OLD``), each
    BE in a ``step`` of the clean-up."""
    bootfs: list[str] = []
    for be in tree.bes():
        state = be.root.state
        if not state.startswith(STATE_RENAMING):
            continue
        with step(f"finishing the interrupted rename of BE {be.name}"):
            finish_rename(ctx, tree, be, state[len(STATE_RENAMING) :], bootfs)


def finish_rename(ctx: BeContext, tree: Tree, be: BootEnv, old: str, bootfs: list[str]) -> None:
    """Finish one killed rename of ``old`` to ``be`` (``bootfs``: the pool's, once read)."""
    if old and old != be.name:
        log.warning("finishing the interrupted rename of BE %s to %s", old, be.name)
        old_ds = tree.be_dataset(old)
        if not bootfs:
            bootfs.append(ctx._bootfs())
        if bootfs[0] == old_ds:
            ctx.zfs.pool_set(ctx.pool, "bootfs", be.dataset)
        old_ref = BeRef(old, old_ds, be.description, False)
        ctx._warn(ctx.backend.post_rename(old_ref, BeRef(be.name, be.dataset, be.description)))
    ctx.zfs.inherit(be.dataset, PROP_STATE)
