"""``list`` and the read-only looks: every BE with its flags, what booting another BE
would change (beadm.rollback_guard), ``check``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from beadm import mounts as mnt
from beadm.becommon import _bootable, _mount_plan
from beadm.results import BeInfo, Listing
from beadm.tree import BootEnv

if TYPE_CHECKING:
    from beadm import rollback_guard
    from beadm.backend import Checked
    from beadm.bectx import BeContext

log = logging.getLogger("beadm.be")  # the BE library's one logger, whichever verb logs


def listing(ctx: BeContext, *, snapshots: bool = True, bootfs: bool = True) -> Listing:
    """Every BE with N/R/T flags: one ``zfs list`` plus one ``zpool get``. Without
    ``snapshots`` the BEs' snapshot lists are empty (and ``zfs list`` skips them: with
    thousands of snapshots they are most of its time); space figures are the same."""
    with ctx._hold():
        return read_listing(ctx, snapshots=snapshots, want_bootfs=bootfs)


def read_listing(ctx: BeContext, *, snapshots: bool, want_bootfs: bool) -> Listing:
    tree = ctx._tree(snapshots=snapshots)
    running = ctx.running_name()
    # every BE, also one being created or destroyed (BeInfo.state says so)
    bes = tree.bes()
    state = ctx.backend.boot_state([ctx._ref(b, running) for b in bes])
    next_boot = state.next_boot
    # the pool's bootfs decides R only where the backend does not (without ``bootfs``
    # it is asked only then: one zpool process less for the table, issue 15)
    fallback = next_boot is None and state.decides
    bootfs = ctx._bootfs() if want_bootfs or fallback else None
    if fallback and bootfs is not None and bootfs.rpartition("/")[0] == ctx.root:
        next_boot = bootfs.rpartition("/")[2]
    where = mnt.zfs_mounts(ctx.mounts())
    infos = tuple(
        BeInfo(
            be=b,
            running=b.name == running,
            next_boot=b.name == next_boot,
            once=b.name == state.once,
            mounted_at=where[b.dataset][-1] if b.dataset in where else None,
        )
        for b in bes
    )
    return Listing(ctx.root, ctx.pool, bootfs, state, infos)


def rollback_reports(
    ctx: BeContext, bes: Sequence[BootEnv]
) -> dict[str, rollback_guard.Report | None]:
    """What booting each of ``bes`` instead of the running BE would change (cluster,
    network; beadm.rollback_guard): each BE is mounted read-only for it. None for
    every BE when no BE runs (nothing to compare with)."""
    running = ctx.running_name()
    with ctx._hold():
        return {b.name: rollback_report(ctx, b, running) for b in bes}


def rollback_report(ctx: BeContext, be: BootEnv,
                    running: str | None) -> rollback_guard.Report | None:
    from beadm import rollback_guard

    if running is None:
        return None
    if be.name == running:
        return rollback_guard.Report(be.name, running)
    plan = [(d.name, rel) for d, rel in _mount_plan(be)]
    view = ctx._view(ctx._ref(be, running))
    return rollback_guard.inspect(
        ctx.runner, plan, ctx.mounts(), be=be.name, running=running,
        running_root=ctx._running_root, be_root=ctx.root, view=lambda: view(False))


def check(ctx: BeContext) -> Checked:
    with ctx._hold():
        tree = ctx._tree()
        running = ctx.running_name()
        return ctx.backend.check([ctx._ref(b, running) for b in _bootable(tree)])
