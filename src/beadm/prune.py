"""The apt hook's automatic snapshots and ``prune``: what the retention policy
(beadm.retention) lets go, destroyed through the BE layer."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from beadm import create, destroy
from beadm import mounts as mnt
from beadm.backend import BeRef, EspUsage
from beadm.becommon import (
    STATE_CREATING,
    STATE_DESTROYING,
    STATE_FAILED,
    STATE_UPGRADING,
    _bootable,
    _check_description,
    _check_len,
    _suppressed,
)
from beadm.errors import BeadmError, RefusedError, UnsupportedError
from beadm.results import AutoSnapshot, Pruned
from beadm.tree import AUTO_PREFIX, BootEnv, Tree, is_beadm_snapshot
from beadm.zfs import (
    PROP_APT_RUN,
    PROP_AUTO,
    PROP_DESCRIPTION,
    PROP_IMPORTANT,
    PROP_KEEP,
    PROP_STATE,
    SNAPSHOT_PROPS,
)

if TYPE_CHECKING:
    from beadm import retention
    from beadm.bectx import BeContext

log = logging.getLogger("beadm.be")  # the BE library's one logger, whichever verb logs

#: The marks ``prune`` reads (set locally) on BE roots and snapshots.
_PRUNE_PROPS = (*SNAPSHOT_PROPS,)
#: ``org.beadm:keep`` values that do not pin; any other value does (``y``, a date, ...):
#: a mistyped yes must not let the snapshot or BE go.
_NOT_PINNED = ("", "no", "off", "false", "0")


def _pins(keep: str) -> bool:
    """True when an ``org.beadm:keep`` value pins (anything but no/off/false/0/empty)."""
    return keep.strip().lower() not in _NOT_PINNED


def auto_snapshot(ctx: BeContext, *, description: str, important: str, run: str,
                  policy: retention.Policy) -> AutoSnapshot:
    """Snapshot the running BE (or, with ``--root``, the one that boots next) as
    ``beadm-auto-YYYYmmdd-HHMMSS`` marked ``org.beadm:auto=apt``, unless the same apt
    ``run`` took one already (then only its importance is added); prune before and
    after (a prune that fails is a warning: the snapshot is still taken). Refused,
    with nothing taken, when the pool stays below the floor."""
    _check_description(description)
    with ctx._changing() as tree:
        be, _ = create.pick_source(ctx, tree, None)
        props = ctx.zfs.snapshot_props(ctx.root, SNAPSHOT_PROPS)
        for s in reversed(tree.snaps.get(be.dataset, []) if run else []):
            mine = props.get(s.name, {})
            if mine.get(PROP_APT_RUN) == run and PROP_AUTO in mine:
                if important and not mine.get(PROP_IMPORTANT):
                    ctx.zfs.set(s.name, PROP_IMPORTANT, important)
                return AutoSnapshot(s.name, True, prune_or_warn(ctx, tree, policy))
        # the snapshot to go back to matters more than the room a prune makes: a prune
        # that fails is a warning, and the snapshot is taken if the pool is above the floor
        prune_or_warn(ctx, tree, policy)
        tree = ctx._tree()
        space = pool_space(ctx)
        floor = policy.pool_min_free.of(space.size)
        if space.free < floor:
            raise RefusedError(
                f"no automatic snapshot: pool {ctx.pool} has {space.free} bytes free, "
                f"below pool_min_free ({policy.pool_min_free}, {floor} bytes), even "
                "after pruning"
            )
        base = AUTO_PREFIX + ctx._clock().strftime("%Y%m%d-%H%M%S")
        snap, n = base, 0
        while any(tree.snapshot(f"{d.name}@{snap}") for d in be.datasets):
            n += 1
            snap = f"{base}-{n}"
        _check_len(max((f"{d.name}@{snap}" for d in be.datasets), key=len))
        marks = {PROP_AUTO: "apt", PROP_DESCRIPTION: description or "apt"}
        if important:
            marks[PROP_IMPORTANT] = important
        if run:
            marks[PROP_APT_RUN] = run
        full = f"{be.dataset}@{snap}"
        ctx.zfs.snapshot(full, recursive=True, props=marks)  # one atomic step
        return AutoSnapshot(full, False, prune_or_warn(ctx, ctx._tree(), policy))


def prune_or_warn(ctx: BeContext, tree: Tree, policy: retention.Policy) -> Pruned:
    """``prune_tree``; when it fails, a warning and nothing pruned (what it did stays done)."""
    try:
        return prune_tree(ctx, tree, policy)
    except BeadmError as exc:
        log.warning("warning: prune failed: %s", exc)
        return Pruned((), pool_space(ctx), policy, ctx.pool)


def prune(ctx: BeContext, policy: retention.Policy) -> Pruned:
    """Destroy the automatic snapshots and BEs the policy lets go (``beadm.retention``)."""
    with ctx._changing() as tree:
        return prune_tree(ctx, tree, policy)


def prune_tree(ctx: BeContext, tree: Tree, policy: retention.Policy) -> Pruned:
    from beadm import retention

    space = pool_space(ctx)
    props = ctx.zfs.snapshot_props(ctx.root, _PRUNE_PROPS, types="filesystem,snapshot")
    snaps = auto_snaps(ctx, tree, props)
    bes, refs = auto_bes(ctx, tree, props, snaps)
    # the ESPs are looked at only when an automatic BE may go
    esps: tuple[EspUsage, ...] | None = None
    if any(b.auto and not b.held for b in bes):
        esps = ctx.backend.esp_usage(refs)
    plan = retention.decide_all(snaps, bes, space, esps, policy)
    held = holds(ctx, tree, plan)
    be_decisions = list(plan.bes)
    went: set[str] = set()
    for k in reversed(range(len(be_decisions))):  # oldest first: a kill leaves the newest
        bd = be_decisions[k]
        if not bd.destroy:
            continue
        if bd.be.name in held:  # zfs destroy would fail: not even marked
            log.warning("warning: prune keeps BE %s: %s", bd.be.name, held[bd.be.name])
            be_decisions[k] = retention.BeDecision(bd.be, False, f"kept: {held[bd.be.name]}")
            continue
        why = prune_be(ctx, bd)
        if why:
            be_decisions[k] = retention.BeDecision(bd.be, False, why)
        else:
            went.add(bd.be.name)
    snap_decisions = []
    if went:
        tree = ctx._tree()  # promotions moved snapshots; BEs went with theirs
    for d in plan.snaps:
        if d.reason == retention.GO_WITH_BE.format(be=d.snap.be) and d.snap.be not in went:
            d = retention.Decision(d.snap, False, f"kept with its BE {d.snap.be}")
        elif d.destroy and d.snap.name in held and d.snap.be not in went:
            log.warning("warning: prune keeps %s: %s", d.snap.name, held[d.snap.name])
            d = retention.Decision(d.snap, False, f"kept: {held[d.snap.name]}")
        snap_decisions.append(d)
    for k in reversed(range(len(snap_decisions))):
        d = snap_decisions[k]
        if not d.destroy or d.snap.be in went:
            continue
        if tree.snapshot(d.snap.name) is None or not tree.has_be(d.snap.be):
            continue  # moved or gone with a BE (dry run: would be)
        log.info("destroying %s: %s", d.snap.name, d.reason)
        try:
            destroy.destroy_snapshot(ctx, tree, tree.be(d.snap.be), d.snap.name.partition("@")[2])
        except BeadmError as exc:  # busy in a way no hold shows: the others still go
            log.warning("warning: prune keeps %s: could not destroy it: %s", d.snap.name, exc)
            snap_decisions[k] = retention.Decision(d.snap, False,
                                                   f"kept: could not destroy it: {exc}")
    return Pruned(tuple(snap_decisions), space, policy, ctx.pool,
                  tuple(be_decisions), esps)


def prune_be(ctx: BeContext, d: retention.BeDecision) -> str:
    """Destroy one automatic BE as ``destroy`` does (promoting its clones, then its
    boot entries on every ESP); returns why it was kept instead, or ""."""
    tree = ctx._tree()  # a promotion before may have changed it
    if not tree.has_be(d.be.name):
        return ""
    be = tree.be(d.be.name)
    try:
        destroy.refuse_destroy(ctx, tree, be)
        destroy.refuse_unique_vz(ctx, tree, be)
    except RefusedError as exc:
        log.warning("warning: prune keeps BE %s: %s", be.name, exc)
        return f"kept: {exc}"
    log.info("destroying BE %s: %s", be.name, d.reason)
    # marked first, its entries next: a kill from here on leaves a BE that boots
    # nothing and that the next changing command finishes destroying
    ref = BeRef(be.name, be.dataset, be.description, False)
    ctx.zfs.set(be.dataset, PROP_STATE, STATE_DESTROYING)
    try:
        if not ctx.runner.dry_run:  # (a dry run shows it once, below)
            ctx._warn(ctx.backend.post_destroy(ref))
        destroy.destroy_be(ctx, tree, be, remove_origin=False, beadm_only=True)
    except BeadmError as exc:
        return prune_be_failed(ctx, be, exc)
    return ""


def prune_be_failed(ctx: BeContext, be: BootEnv, exc: BeadmError) -> str:
    """After a failed destroy of ``be`` by prune (busy: mounted in another namespace, a
    ``zfs send``'s hold): a BE whose datasets all stand loses its mark and gets its
    entries back, with one warning (left marked, the next changing command would try
    again, fail again, and end); one partly gone stays marked (it is not whole: the
    next changing command finishes it, warning if it fails again). Returns why it was
    kept, or "" when it went (only something after it, its origin snapshot, did not)."""
    now = ctx._tree(snapshots=False)
    left = [d.name for d in be.datasets if d.name in now.fs]
    if not left:
        log.warning("warning: prune destroyed BE %s, but not all it held: %s", be.name, exc)
        return ""
    if len(left) < len(be.datasets):
        log.warning("warning: prune left BE %s half-destroyed (the next changing command "
                    "finishes it): %s", be.name, exc)
        return f"kept: half-destroyed: {exc}"
    with _suppressed(f"clearing the destroying mark of BE {be.name}"):
        ctx.zfs.inherit(be.dataset, PROP_STATE)
        # its entries back, as ``sync`` writes them: that reads its kernels through a
        # read-only view (post_create writes its cmdline: a writable mount, which fails
        # while the BE is mounted read-only in another namespace)
        running = ctx.running_name()
        with _suppressed(f"writing the boot entries of BE {be.name} back (beadm sync "
                         "does)"):
            ctx._warn(ctx.backend.sync([ctx._ref(b, running) for b in _bootable(ctx._tree())],
                                       only_if_used=True))
    log.warning("warning: prune keeps BE %s: could not destroy it: %s", be.name, exc)
    return f"kept: could not destroy it: {exc}"


def holds(ctx: BeContext, tree: Tree, plan: retention.Decisions) -> dict[str, str]:
    """Why each BE and snapshot ``plan`` destroys cannot go, when one of its snapshots
    has a ``zfs hold`` (``zfs destroy`` would fail): {BE or snapshot name: why}. One
    ``zfs get`` for all of them, and none when nothing goes."""
    owner: dict[str, str] = {}
    for bd in plan.bes:
        if bd.destroy and tree.has_be(bd.be.name):
            owner.update((s.name, bd.be.name) for s in tree.be(bd.be.name).snapshots)
    for d in plan.snaps:
        if d.destroy and tree.has_be(d.snap.be):
            snapname = d.snap.name.partition("@")[2]
            for ds in tree.be(d.snap.be).datasets:
                if tree.snapshot(name := f"{ds.name}@{snapname}") is not None:
                    owner.setdefault(name, d.snap.name)
    refs = ctx.zfs.userrefs(sorted(owner))
    out: dict[str, str] = {}
    for name in sorted(owner):
        if refs.get(name, 0) > 0:
            out.setdefault(owner[name], f"{name} has a zfs hold (zfs holds {name})")
    return out


def pool_space(ctx: BeContext) -> retention.Space:
    from beadm import retention

    used, avail = ctx.zfs.space(ctx.pool)
    return retention.Space(free=avail, size=used + avail)


def auto_snaps(ctx: BeContext, tree: Tree,
               props: dict[str, dict[str, str]]) -> list[retention.Snap]:
    """Every snapshot of every BE root, with its marks. Automatic: named
    ``beadm-auto-...`` *and* ``org.beadm:auto`` set on it locally."""
    from beadm import retention

    out: list[retention.Snap] = []
    for be in tree.bes():
        if be.root.state == STATE_CREATING:
            continue
        for s in tree.snaps.get(be.dataset, []):
            mine = props.get(s.name, {})
            same = [x for d in be.datasets
                    if (x := tree.snapshot(f"{d.name}@{s.snapname}")) is not None]
            out.append(retention.Snap(
                name=s.name,
                be=be.name,
                created=s.creation,
                createtxg=s.createtxg,
                used=sum(x.used for x in same),
                auto=s.snapname.startswith(AUTO_PREFIX) and bool(mine.get(PROP_AUTO)),
                important=mine.get(PROP_IMPORTANT, ""),
                pinned=_pins(mine.get(PROP_KEEP, "")),
                clones=tuple(sorted({c for x in same for c in x.clones})),
            ))
    return out


def auto_bes(ctx: BeContext, tree: Tree, props: dict[str, dict[str, str]],
             snaps: list[retention.Snap]) -> tuple[list[retention.Be], list[BeRef]]:
    """Every BE with its marks and, for an automatic one (``org.beadm:auto`` set
    locally on its root), why it is protected, if it is. Also every BE's ref."""
    from beadm import retention

    running = ctx.running_name()
    bes = [b for b in tree.bes() if b.root.state != STATE_CREATING]
    refs = [ctx._ref(b, running) for b in bes]
    auto = [b for b in bes if props.get(b.dataset, {}).get(PROP_AUTO)]
    if not auto:
        return [], refs
    refused = ""
    try:
        ctx._preflight()
    except UnsupportedError as exc:
        refused = f"the boot backend refuses changes here: {exc}"
    state = ctx.backend.boot_state(refs)
    bootfs = ctx._bootfs()
    where = mnt.zfs_mounts(ctx.mounts())
    auto_snap = {s.name for s in snaps if s.auto}
    out: list[retention.Be] = []
    for b in auto:
        mine = props.get(b.dataset, {})
        inside = {d.name for d in b.datasets}
        foreign = [s.name for s in b.snapshots
                   if not is_beadm_snapshot(s.snapname)
                   and f"{b.dataset}@{s.snapname}" not in auto_snap]
        pinned = [s.name for s in b.snapshots
                  if _pins(props.get(s.name, {}).get(PROP_KEEP, ""))]
        outside = sorted(c for s in b.snapshots for c in s.clones
                         if not c.startswith(f"{ctx.root}/"))
        mounted = sorted(where[d.name][-1] for d in b.datasets if d.name in where)
        held = (refused
                or ("running now (N)" if b.name == running else "")
                or ("boots next (R)" if b.name == state.next_boot else "")
                or ("boots next, once (T)" if b.name == state.once else "")
                or ("on trial" if b.name == state.trial else "")
                or ("the pool's bootfs (default)" if b.dataset == bootfs else "")
                or ("upgrade in progress" if b.root.state == STATE_UPGRADING else "")
                or (f"mounted at {mounted[0]}" if mounted else "")
                or (f"holds {foreign[0]}, which beadm did not make" if foreign else "")
                or (f"holds the pinned snapshot {pinned[0]}" if pinned else "")
                or (f"origin of {outside[0]}, which is no BE" if outside else ""))
        own = sum(d.usedbysnapshots for d in b.datasets)
        promotes = any(c not in inside for s in b.snapshots for c in s.clones)
        out.append(retention.Be(
            name=b.name,
            created=b.root.creation,
            createtxg=b.root.createtxg,
            # a clone promoted first takes the snapshots it needs (and their blocks)
            used=b.root.used - own if promotes else b.root.used,
            auto=True,
            important=mine.get(PROP_IMPORTANT, ""),
            pinned=_pins(mine.get(PROP_KEEP, "")),
            held=held,
            failed=b.root.state == STATE_FAILED,
        ))
    return out, refs
