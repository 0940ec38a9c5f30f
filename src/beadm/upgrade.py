"""``beadm upgrade``: apt run inside a fresh clone of the running BE, in a chroot
(:mod:`beadm.aptchroot`).

The running BE is cloned (marked ``upgrading``), apt runs in the clone in a chroot, and
after the chroot is gone, beadm writes the clone's boot entries from outside (the
backend's ``post_create``), with the kernels the upgrade installed. A failed or
interrupted apt leaves the clone marked ``failed``.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from beadm import create
from beadm.aptchroot import Change, Chroot, apt_argv, diff, importance, packages
from beadm.backend import BeRef
from beadm.becommon import AUTO_UPGRADE, STATE_FAILED, _check_description, _mount_plan, _suppressed
from beadm.errors import RefusedError, UpgradeError
from beadm.names import check_new_be_name, same_but_case
from beadm.results import Upgraded
from beadm.runner import LineSink, Result
from beadm.tree import Tree
from beadm.zfs import PROP_AUTO, PROP_IMPORTANT, PROP_STATE

if TYPE_CHECKING:
    from beadm.bectx import BeContext

log = logging.getLogger(__name__)
_be_log = logging.getLogger("beadm.be")  # the verb logs as the BE library

DEFAULT_APT_ARGS = ("full-upgrade", "-y")


def describe(running: str, apt_args: Sequence[str]) -> str:
    text = f"upgrade of {running}: apt-get {shlex.join(apt_args)}"
    return text if len(text) <= 200 and text.isprintable() else f"upgrade of {running}"


# -- the verb: clone, apt in the clone, its entries ------------------------------------

def upgrade(ctx: BeContext, name: str | None, apt_args: Sequence[str] = (), *,
            description: str = "", on_line: LineSink | None = None) -> Upgraded:
    """Clone the running BE as ``name``, run ``apt-get APT_ARGS`` (default
    ``full-upgrade -y``) in it in a chroot (``beadm.upgrade``), then write its boot
    entries: it is ready to try (``activate --trial``), nothing boots it yet.

    The clone is marked ``upgrading`` while apt runs; if apt (or writing the entries)
    fails, or beadm is interrupted, it is marked ``failed`` and the error says so; a
    killed upgrade leaves ``upgrading``, which the next changing command turns into
    ``failed``. The running BE, the pool's ``bootfs`` and what boots next are never
    changed."""
    args = tuple(apt_args) or DEFAULT_APT_ARGS
    if name is not None:
        check_new_be_name(name)
    _check_description(description)
    with ctx._changing(boot=True) as tree:
        running = ctx.running_name()
        if running is None or not tree.has_be(running):
            raise RefusedError(f"upgrade clones the running BE: no BE under {ctx.root} "
                               "is mounted at /")
        if name is None:
            name = upgrade_name(ctx, tree)
        src = tree.be(running)
        ref = create.clone_be(ctx, tree, name, None, description or describe(running, args),
                              [(PROP_AUTO, AUTO_UPGRADE)], upgrading=True)
        plan = [(ref.dataset + d.name[len(src.dataset):], rel)
                for d, rel in _mount_plan(src)]
        changes: tuple[Change, ...] = ()
        try:
            changes = apt_in(ctx, plan, args, on_line=on_line)
        except BaseException as exc:
            mark_failed(ctx, ref)
            if isinstance(exc, Exception):
                raise UpgradeError(
                    f"upgrade in BE {name} failed: {exc}; BE {name} is marked failed "
                    f"(beadm destroy {name} removes it); the running BE {running} and "
                    "what boots next are unchanged") from exc
            _be_log.warning("warning: upgrade in BE %s interrupted: it is marked failed "
                            "(beadm destroy %s removes it)", name, name)
            raise
        try:
            ctx._warn(ctx.backend.post_create(ref))
        except BaseException:
            mark_failed(ctx, ref)
            _be_log.warning("warning: the boot entries of BE %s could not be written: it is "
                            "marked failed (beadm destroy %s removes it)", name, name)
            with _suppressed("removing the boot entries of the failed upgrade"):
                ctx._warn(ctx.backend.post_destroy(ref))
            raise
        important = importance(changes)
        if important:
            ctx.zfs.set(ref.dataset, PROP_IMPORTANT, important)
        ctx.zfs.inherit(ref.dataset, PROP_STATE)
        return Upgraded(ref, running, args, changes)


def upgrade_name(ctx: BeContext, tree: Tree) -> str:
    base = "upgrade-" + ctx._clock().strftime("%Y%m%d-%H%M%S")
    name, n = base, 0
    while tree.has_be(name) or same_but_case(name, tree.be_names()):
        n += 1
        name = f"{base}-{n}"
    return name


def apt_in(ctx: BeContext, plan: list[tuple[str, str]], args: tuple[str, ...], *,
           on_line: LineSink | None = None) -> tuple[Change, ...]:
    ctx._release()  # the chroot makes its own namespace from the host's
    chroot = (ctx._chroot(ctx._raw_runner, plan) if ctx._chroot is not None
              else Chroot(ctx._raw_runner, plan, out=ctx._out))
    with chroot.mounted() as root:
        before = packages(root)
        res = root.run(apt_argv(args), check=False,
                       on_line=on_line or (lambda line: _be_log.info("apt: %s", line)))
        if res.returncode != 0:
            raise UpgradeError(f"apt-get {shlex.join(args)} exited {res.returncode}: "
                               f"{apt_failure(res)}")
        after = packages(root)
    return diff(before, after)


def apt_failure(res: Result) -> str:
    """The useful part of a failed apt's output, for its one error line: its errors
    (``E:`` lines, the last three), else its last line on stderr, else on stdout."""
    errors = [ln.strip() for ln in res.stderr.splitlines() if ln.startswith("E:")]
    if errors:
        return "; ".join(errors[-3:])
    for text in (res.stderr, res.stdout):
        tail = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if tail:
            return tail[-1]
    return f"exit status {res.returncode}"


def mark_failed(ctx: BeContext, ref: BeRef) -> None:
    if ctx.runner.dry_run:
        return
    with _suppressed(f"marking BE {ref.name} failed"):
        ctx.zfs.set(ref.dataset, PROP_STATE, STATE_FAILED)
