"""``activate`` (also ``--temporary`` and ``--trial``), ``init``, ``sync``, ``migrate``:
what boots next and the boot entries."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from beadm import listing, shared
from beadm import watchdog as wd
from beadm.backend import BeRef
from beadm.becommon import _STALE, STATE_CREATING, STATE_FAILED, STATE_UPGRADING, _bootable
from beadm.errors import ClusterGuardError, RefusedError, UnsupportedError, UsageError
from beadm.names import check_be_name, check_new_be_name
from beadm.tree import BootEnv, Tree
from beadm.txn import UndoLog
from beadm.zfs import PROP_STATE

if TYPE_CHECKING:
    from beadm import rollback_guard
    from beadm.bectx import BeContext

log = logging.getLogger("beadm.be")  # the BE library's one logger, whichever verb logs


def activate(
    ctx: BeContext,
    name: str,
    *,
    temporary: bool = False,
    force: bool = False,
    on_report: Callable[[rollback_guard.Report], None] | None = None,
) -> BeRef:
    """Make ``name`` boot next (once with ``temporary``): bootfs, canmount, backend.

    First the BE is compared with the running one (beadm.rollback_guard): the report
    goes to ``on_report`` (the CLI prints it); a BE that can break the cluster is
    refused, before anything changes, unless ``force``."""
    check_be_name(name)
    with ctx._changing(boot=True) as tree:
        return activate_locked(ctx, tree, name, temporary=temporary, force=force,
                               on_report=on_report)


def activate_locked(ctx: BeContext, tree: Tree, name: str, *, temporary: bool, force: bool,
                    on_report: Callable[[rollback_guard.Report], None] | None) -> BeRef:
    """``activate``, under the lock the caller holds (``trial_boot`` confirms a trial
    under the lock it re-verified the trial with)."""
    be = ctx._need(tree, name)
    running = ctx.running_name()
    bootfs = ctx._bootfs()  # first: altroot (the drop-ins) comes with it (issue 15)
    before_it_boots(ctx, be, running, force=force, on_report=on_report)
    ref = ctx._ref(be, running)
    undo = UndoLog()
    try:
        point_pool_at(ctx, tree, None if temporary else be.dataset, bootfs, undo)
        ctx._warn(ctx.backend.activate(ref, temporary=temporary))
    except BaseException:
        undo.rollback()
        raise
    return ref


def point_pool_at(ctx: BeContext, tree: Tree, dataset: str | None, bootfs: str,
                  undo: UndoLog) -> None:
    """The pool's ``bootfs`` (read under this command's lock) to ``dataset`` (None: left
    alone), and no BE dataset with ``canmount=on``: the initramfs mounts the booted BE
    (and its children) explicitly, and `zfs mount -a` must skip every other BE,
    including the one running now (the installer's pve-1 has canmount=on). Each change
    is logged in ``undo``."""
    if dataset is not None and bootfs != dataset:
        ctx.zfs.pool_set(ctx.pool, "bootfs", dataset)
        undo.done("bootfs", lambda: ctx.zfs.pool_set(ctx.pool, "bootfs", bootfs))
    for other in tree.bes():
        for d in other.datasets:
            if d.canmount == "on":
                ctx.zfs.set(d.name, "canmount", "noauto")
                undo.done(f"canmount of {d.name}",
                          functools.partial(ctx.zfs.set, d.name, "canmount", "on"))


def before_it_boots(ctx: BeContext, be: BootEnv, running: str | None, *, force: bool,
                    on_report: Callable[[rollback_guard.Report], None] | None) -> None:
    """activate (also --trial), before anything changes: the BE compared with the
    running one (beadm.rollback_guard; the report goes to ``on_report``, a BE that can
    break the cluster is refused unless ``force``), then the shared-state drop-ins it
    lacks (each appears whole and is right for the BE whether the activation then
    completes or not: nothing to undo). A BE whose upgrade failed is refused unless
    ``force``."""
    if be.root.state in _STALE:  # its clean-up failed: not a whole BE
        half = "created" if be.root.state == STATE_CREATING else "destroyed"
        raise RefusedError(f"not activating {be.name}: it is half-{half} (beadm destroy "
                           f"{be.name} removes it)")
    if be.root.state in (STATE_FAILED, STATE_UPGRADING):
        if not force:
            raise RefusedError(f"not activating {be.name}: its upgrade failed (beadm "
                               f"destroy {be.name} removes it; activate --force boots it "
                               "anyway)")
        log.warning("warning: BE %s: its upgrade failed; activated anyway (--force), it is "
                    "no longer marked failed", be.name)
        ctx.zfs.inherit(be.dataset, PROP_STATE)
    report = listing.rollback_report(ctx, be, running)
    if report is not None:
        if on_report is not None:
            on_report(report)
        if report.cluster and not force:
            raise ClusterGuardError(
                report.cluster,
                f"not activating {be.name}: booting it can break the Proxmox cluster; "
                "activate --force does it anyway")
    shared.shared_state_into(ctx, be.name, be.dataset, new=False)


def activate_trial(
    ctx: BeContext,
    name: str,
    *,
    tries: int,
    watchdog: int = wd.DEFAULT,
    force: bool = False,
    on_report: Callable[[rollback_guard.Report], None] | None = None,
) -> BeRef:
    """Boot ``name`` next with ``tries`` counted tries; the running BE is the default
    that boots once they are spent (or a health check fails): see beadm(8), TRIAL BOOTS.
    A trial boot not confirmed ``watchdog`` seconds after the watchdog's early load is
    reset (0: no watchdog). Like ``activate`` for the running BE (bootfs, canmount), then
    the backend's trial."""
    check_be_name(name)
    if not 1 <= tries <= 9:
        raise UsageError(f"--tries must be 1 to 9, not {tries}")
    wd.check(watchdog)
    with ctx._changing(boot=True) as tree:  # (the backend's preflight first)
        if not ctx.backend.trials():
            raise UnsupportedError(f"backend {ctx.backend.name} has no trial boots "
                                   "(boot counting): 'beadm activate -t' boots a BE once")
        be = ctx._need(tree, name)
        running = ctx.running_name()
        if running is None or not tree.has_be(running):
            raise RefusedError(f"activate --trial needs a running BE under {ctx.root} "
                               "to fall back to")
        if running == name:
            raise UsageError(f"BE {name} is running: a trial is for another BE")
        bootfs = ctx._bootfs()  # first: altroot (the drop-ins) comes with it (issue 15)
        before_it_boots(ctx, be, running, force=force, on_report=on_report)
        back = ctx._ref(tree.be(running), running)
        undo = UndoLog()
        try:
            point_pool_at(ctx, tree, back.dataset, bootfs, undo)
            ctx._warn(ctx.backend.activate_trial(ctx._ref(be, running), back, tries, watchdog))
        except BaseException:
            undo.rollback()
            raise
        return ctx._ref(be, running)


def init(ctx: BeContext, name: str | None = None) -> BeRef:
    """Adopt an existing dataset under the BE root as a BE (backend writes its entries)."""
    with ctx._changing(boot=True) as tree:
        running = ctx.running_name()
        if name is None:
            if running is None:
                raise UsageError(f"no running BE under {ctx.root}; name the BE to adopt")
            name = running
        check_new_be_name(name)  # its entries become files on the ESPs
        be = ctx._need(tree, name)
        ref = ctx._ref(be, running)
        ctx._warn(ctx.backend.init(ref))
        return ref


def sync(ctx: BeContext, *, only_if_used: bool = False) -> None:
    with ctx._changing(boot=not only_if_used) as tree:
        running = ctx.running_name()
        ctx._warn(ctx.backend.sync([ctx._ref(b, running) for b in _bootable(tree)],
                                   only_if_used=only_if_used))


def migrate(ctx: BeContext) -> None:
    with ctx._changing(boot=True) as tree:
        running = ctx.running_name()
        ctx._warn(ctx.backend.migrate([ctx._ref(b, running) for b in tree.bes()]))
