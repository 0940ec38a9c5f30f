"""``rename``: a BE's datasets, the pool's ``bootfs`` and the backend's entries, undone
as a whole on failure."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from beadm.backend import BeRef
from beadm.becommon import STATE_FAILED, STATE_RENAMING, _check_len, _refuse_case_clash
from beadm.errors import ExistsError, RefusedError
from beadm.names import check_be_name, check_new_be_name
from beadm.txn import UndoLog
from beadm.zfs import PROP_STATE

if TYPE_CHECKING:
    from beadm.bectx import BeContext

log = logging.getLogger("beadm.be")  # the BE library's one logger, whichever verb logs


def rename(ctx: BeContext, old: str, new: str) -> BeRef:
    """Rename a BE's datasets (without remounting); refuses the running BE.

    Everything that can be checked is checked before the first change (the new name
    valid on FAT, no BE differing only in case, lengths, the backend's own check).
    Then: mark the BE root ``renaming:OLD``, ``zfs rename``, move ``bootfs``, the
    backend's ``post_rename``, clear the mark. A failure undoes every step (the
    backend's with ``post_rename(new, old)``); a kill leaves the mark, and the next
    changing command finishes the rename (:func:`beadm.recovery.finish_renames`).
    """
    check_be_name(old)
    check_new_be_name(new)
    with ctx._changing(boot=True) as tree:
        be = ctx._need(tree, old)
        target = tree.be_dataset(new)
        if target in tree.fs:
            raise ExistsError(f"BE {new} already exists")
        _refuse_case_clash(new, [n for n in tree.be_names() if n != old])
        if old == ctx.running_name():
            raise RefusedError(f"BE {old} is the running BE; renaming it is not supported")
        if be.root.state == STATE_FAILED:
            raise RefusedError(f"BE {old} is a failed upgrade: destroy it, do not rename it")
        for d in be.datasets:
            _check_len(target + d.name[len(be.dataset) :])
        for s in be.snapshots:
            _check_len(target + s.name[len(be.dataset) :])
        old_ref = BeRef(old, be.dataset, be.description, False)
        new_ref = BeRef(new, target, be.description, False)
        ctx.backend.check_rename(old_ref, new_ref)
        bootfs = ctx._bootfs()
        undo = UndoLog()
        try:
            ctx.zfs.set(be.dataset, PROP_STATE, STATE_RENAMING + old)
            undo.done(f"mark of {old}", lambda: ctx.zfs.inherit(be.dataset, PROP_STATE))
            ctx.zfs.rename(be.dataset, target)
            backend_ran: list[bool] = []

            def unrename() -> None:
                ctx.zfs.rename(target, be.dataset)
                if backend_ran:
                    ctx._warn(ctx.backend.post_rename(new_ref, old_ref))

            undo.done(f"rename of {old} to {new}", unrename)
            if bootfs == be.dataset:
                ctx.zfs.pool_set(ctx.pool, "bootfs", target)
                undo.done("bootfs", lambda: ctx.zfs.pool_set(ctx.pool, "bootfs", bootfs))
            backend_ran.append(True)
            ctx._warn(ctx.backend.post_rename(old_ref, new_ref))
            ctx.zfs.inherit(target, PROP_STATE)
        except BaseException:
            ctx._release()  # the undo starts from fresh ESP mounts, as a new command
            undo.rollback()
            raise
        return new_ref
