"""``destroy``: a BE (promoting its dependent clones first) or a BE snapshot, and the
guards before it (running, boots next, unique vzdump backups)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from beadm import mountbe
from beadm.backend import BeRef
from beadm.becommon import STATE_CREATING, _mount_plan
from beadm.errors import NotFoundError, RefusedError
from beadm.names import split_be_snapshot
from beadm.tree import AUTO_PREFIX, BootEnv, Tree, is_beadm_snapshot
from beadm.zfs import Dataset

if TYPE_CHECKING:
    from beadm.bectx import BeContext

log = logging.getLogger("beadm.be")  # the BE library's one logger, whichever verb logs


def destroy_check(ctx: BeContext, spec: str, *, force: bool = False) -> str:
    """Validate a destroy without changing anything; return what would be destroyed."""
    be_name, snap = split_be_snapshot(spec)
    tree = ctx._tree()
    be = ctx._need(tree, be_name)
    if snap is not None:
        snapshot_to_destroy(ctx, tree, be, snap)
        return f"snapshot {be_name}@{snap}"
    with ctx._hold():  # the guards' looks into BEs: in the backend's namespace
        refuse_destroy(ctx, tree, be)
        if not force:
            refuse_unique_vz(ctx, tree, be)
    return f"BE {be_name} ({be.dataset} and {len(be.datasets) - 1} child datasets)"


def destroy(ctx: BeContext, spec: str, *, origin: bool = False, force: bool = False) -> None:
    """Destroy a BE (promoting dependent clones first) or a BE snapshot."""
    be_name, snap = split_be_snapshot(spec)
    with ctx._changing() as tree:
        be = ctx._need(tree, be_name)
        if snap is not None:
            destroy_snapshot(ctx, tree, be, snap)
            return
        refuse_destroy(ctx, tree, be)
        if not force:
            refuse_unique_vz(ctx, tree, be)
        mountbe.unmount_be(ctx, be, force=False)
        destroy_be(ctx, tree, be, remove_origin=origin, beadm_only=False)


def destroy_snapshot(ctx: BeContext, tree: Tree, be: BootEnv, snap: str) -> None:
    """``destroy BE@snap`` (also ``prune``'s): refused while it has clones."""
    full = snapshot_to_destroy(ctx, tree, be, snap)
    ctx.zfs.destroy(full, recursive=True)


def snapshot_to_destroy(ctx: BeContext, tree: Tree, be: BootEnv, snap: str) -> str:
    full = f"{be.dataset}@{snap}"
    if tree.snapshot(full) is None:
        raise NotFoundError(f"snapshot {be.name}@{snap} does not exist")
    for d in be.datasets:
        s = tree.snapshot(f"{d.name}@{snap}")
        if s is not None and s.clones:
            raise RefusedError(
                f"snapshot {s.name} has clones ({', '.join(s.clones)}); "
                "destroy or promote them first"
            )
    return full


def refuse_destroy(ctx: BeContext, tree: Tree, be: BootEnv) -> None:
    ctx._preflight()
    running = ctx.running_name()
    if be.name == running:
        raise RefusedError(f"BE {be.name} is the running BE")
    refs = [ctx._ref(b, running) for b in tree.bes()]
    state = ctx.backend.boot_state(refs)
    bootfs = ctx._bootfs()
    if be.name in (state.next_boot, state.once) or bootfs == be.dataset:
        raise RefusedError(f"BE {be.name} boots next; activate another BE first")


def refuse_unique_vz(ctx: BeContext, tree: Tree, be: BootEnv) -> None:
    """Refuse when the BE holds vzdump backups, ISOs or templates found nowhere else."""
    running = ctx.running_name()
    others = [b for b in tree.bes() if b.name not in (be.name, running)
              and b.root.state != STATE_CREATING]
    plans = [[(d.name, rel) for d, rel in _mount_plan(b)] for b in [be, *others]]
    from beadm import vzguard

    def ro(b: BootEnv) -> Callable[[], Path | None]:
        view = ctx._view(ctx._ref(b, running))
        return lambda: view(False)

    vzguard.refuse_unique(ctx.runner, be.name, plans[0], plans[1:], ctx.mounts(),
                          views={b.dataset: ro(b) for b in [be, *others]})


def destroy_be(
    ctx: BeContext, tree: Tree, be: BootEnv, *, remove_origin: bool, beadm_only: bool
) -> set[str]:
    """Promote dependents, destroy the BE, then its origin snapshots. Returns what went."""
    inside = {d.name for d in be.datasets}
    promote: list[str] = []
    origins: list[tuple[str, set[str]]] = []  # origin snapshot after promotions, its clones
    for d in be.datasets:
        last: tuple[str, Dataset] | None = None
        for s in tree.snaps.get(d.name, []):
            outside = sorted(c for c in s.clones if c not in inside)
            if outside:
                # Oldest first: promoting the clone of an older snapshot leaves the
                # clones of younger ones depending on this dataset, so each promotion
                # stands (collect, then promote).
                promote.append(outside[0])
                last = (outside[0], s)
        if last is not None:
            pick, s = last
            origins.append((f"{pick}@{s.snapname}", set(s.clones) - {pick}))
        elif d.origin:
            o = tree.snapshot(d.origin)
            clones = set(o.clones) if o is not None else clones_of(ctx, d.origin)
            origins.append((d.origin, clones - {d.name}))
    for clone in promote:
        log.info("promoting %s", clone)
        ctx.zfs.promote(clone)
    ctx.zfs.destroy(be.dataset, recursive=True)
    gone = set(inside)
    for snap, others in origins:
        snapname = snap.partition("@")[2]
        if others - inside:
            continue
        if remove_origin or is_beadm_snapshot(snapname):
            ctx.zfs.destroy(snap)
            gone.add(snap)
        elif snapname.startswith(AUTO_PREFIX):
            log.info("kept automatic snapshot %s ('beadm prune' decides)", snap)
        elif not beadm_only:
            log.warning("kept origin snapshot %s (not made by beadm; -o removes it)", snap)
    ctx._warn(ctx.backend.post_destroy(BeRef(be.name, be.dataset, be.description, False)))
    return gone


def clones_of(ctx: BeContext, snapshot: str) -> set[str]:
    value = ctx.zfs.get(snapshot, "clones")
    return {c for c in value.split(",") if c}
