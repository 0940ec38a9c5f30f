"""The BE library: what a BE is, where BEs live, and every lifecycle command with its rules.

A BE is a direct child filesystem of the *BE root* (``rpool/ROOT``), together with its
descendant datasets. The BE root is the parent of the dataset mounted at ``/`` unless the
caller names it. Changing commands hold the lock, clean up what a killed ``create`` left
behind (datasets and snapshots marked ``org.beadm:state=creating``), then do their work.

:class:`BeManager` is the library's one entry point; each of its commands is a function
of one module per verb (as FreeBSD's libbe), over the shared context
(:class:`beadm.bectx.BeContext`): ``create``, ``upgrade``, ``destroy``, ``rename``,
``activate`` (also init, sync, migrate), ``trialboot``, ``mountbe``, ``listing``,
``prune`` (with the apt hook's snapshots), ``shared``; ``recovery`` finishes what a killed
command left. Each verb module is imported when its command runs (start-up time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TextIO, TypeVar

from beadm import watchdog as wd
from beadm.backend import BeRef
from beadm.becommon import (
    _STALE,
    AUTO_UPGRADE,
    MAX_DESCRIPTION_LEN,
    NOT_BOOTABLE,
    STATE_CREATING,
    STATE_DESTROYING,
    STATE_FAILED,
    STATE_RENAMING,
    STATE_UPGRADING,
    _bootable,
    _check_description,
    _check_len,
    _mount_plan,
    _now,
    _refuse_case_clash,
    _rmdir,
    _suppressed,
    _unprintable,
)
from beadm.bectx import _HOST_NS, BeContext, _HostNsRunner, _needs_host_ns
from beadm.names import check_component
from beadm.record import replace
from beadm.results import AutoSnapshot, BeInfo, Done, Listing, Pruned, TrialOutcome, Upgraded

if TYPE_CHECKING:
    from beadm import pvestate, retention, rollback_guard
    from beadm.backend import Checked
    from beadm.runner import LineSink
    from beadm.tree import BootEnv, Tree

#: a verb's own result record, to which the command's warnings are added
_R = TypeVar("_R", AutoSnapshot, Pruned, TrialOutcome, Upgraded)


class BeManager(BeContext):
    """Every BE operation. Dependencies are injected; nothing here prints or exits. Each
    command runs its verb module's function over this context and returns its result:
    what it did and the warnings that did not stop it (nothing is left for the caller
    to read afterwards)."""

    def _done(self, verb: Callable[[], BeRef | str | None]) -> Done:
        """Run a changing verb; what it made or changed, with the command's warnings."""
        self._take_warnings()  # (a command that failed before may have left some)
        try:
            made = verb()
        finally:
            warned = self._take_warnings()
        if made is None or isinstance(made, str):
            return Done(made or "", None, warned)
        return Done(made.name, made, warned)

    def _with_warnings(self, verb: Callable[[], _R]) -> _R:
        """Run a verb whose result has its own record; the command's warnings added."""
        self._take_warnings()
        try:
            result = verb()
        finally:
            warned = self._take_warnings()
        return replace(result, warnings=result.warnings + warned)

    # -- queries (beadm.listing) -----------------------------------------------------------

    def listing(self, *, snapshots: bool = True, bootfs: bool = True) -> Listing:
        from beadm import listing
        return listing.listing(self, snapshots=snapshots, bootfs=bootfs)

    def rollback_reports(
        self, bes: Sequence[BootEnv]
    ) -> dict[str, rollback_guard.Report | None]:
        from beadm import listing
        return listing.rollback_reports(self, bes)

    def check(self) -> Checked:
        from beadm import listing
        return listing.check(self)

    # -- what a killed command left (beadm.recovery), at the start of each changing one -----

    def _recover(self, tree: Tree) -> Tree:
        from beadm import recovery  # (not at start-up: read-only commands never need it)
        return recovery.cleanup_stale(self, tree)

    # -- create (beadm.create), upgrade (beadm.upgrade) ------------------------------------

    def create(self, name: str, *, source: str | None = None, description: str = "",
               props: list[str] | None = None) -> Done:
        from beadm import create
        return self._done(lambda: create.create(self, name, source=source,
                                                description=description, props=props))

    def snapshot(self, spec: str) -> Done:
        from beadm import create
        return self._done(lambda: create.snapshot(self, spec))

    def upgrade(self, name: str | None, apt_args: Sequence[str] = (), *,
                description: str = "", on_line: LineSink | None = None) -> Upgraded:
        from beadm import upgrade
        return self._with_warnings(lambda: upgrade.upgrade(
            self, name, apt_args, description=description, on_line=on_line))

    # -- destroy (beadm.destroy), shared state (beadm.shared) -------------------------------

    def destroy_check(self, spec: str, *, force: bool = False) -> str:
        from beadm import destroy
        return destroy.destroy_check(self, spec, force=force)

    def destroy(self, spec: str, *, origin: bool = False, force: bool = False) -> Done:
        from beadm import destroy
        return self._done(lambda: destroy.destroy(self, spec, origin=origin, force=force))

    def shared_state(self, *, move: bool, out: TextIO | None = None) -> list[pvestate.Finding]:
        from beadm import shared
        return shared.shared_state(self, move=move, out=out)

    # -- the apt hook's snapshots and their retention (beadm.prune) -------------------------

    def auto_snapshot(self, *, description: str, important: str, run: str,
                      policy: retention.Policy) -> AutoSnapshot:
        from beadm import prune
        return self._with_warnings(lambda: prune.auto_snapshot(
            self, description=description, important=important, run=run, policy=policy))

    def prune(self, policy: retention.Policy) -> Pruned:
        from beadm import prune
        return self._with_warnings(lambda: prune.prune(self, policy))

    # -- rename (beadm.rename) ---------------------------------------------------------------

    def rename(self, old: str, new: str) -> Done:
        from beadm import rename
        return self._done(lambda: rename.rename(self, old, new))

    # -- activate / init / sync (beadm.activate), trial boots (beadm.trialboot) -------------

    def activate(self, name: str, *, temporary: bool = False, force: bool = False,
                 on_report: Callable[[rollback_guard.Report], None] | None = None) -> Done:
        from beadm import activate
        return self._done(lambda: activate.activate(self, name, temporary=temporary,
                                                    force=force, on_report=on_report))

    def activate_trial(self, name: str, *, tries: int, watchdog: int = wd.DEFAULT,
                       force: bool = False,
                       on_report: Callable[[rollback_guard.Report], None] | None = None,
                       ) -> Done:
        from beadm import activate
        return self._done(lambda: activate.activate_trial(
            self, name, tries=tries, watchdog=watchdog, force=force, on_report=on_report))

    def trial_boot(self, checks: Callable[[], list[str]], *, reboot: bool = True,
                   disarm: Callable[[], list[str]] | None = None) -> TrialOutcome:
        from beadm import trialboot
        return self._with_warnings(lambda: trialboot.trial_boot(self, checks, reboot=reboot,
                                                         disarm=disarm))

    def init(self, name: str | None = None) -> Done:
        from beadm import activate
        return self._done(lambda: activate.init(self, name))

    def sync(self, *, only_if_used: bool = False) -> Done:
        from beadm import activate
        return self._done(lambda: activate.sync(self, only_if_used=only_if_used))

    def migrate(self) -> Done:
        from beadm import activate
        return self._done(lambda: activate.migrate(self))

    # -- mount / umount (beadm.mountbe) ------------------------------------------------------

    def mount(self, name: str, directory: str | None = None) -> Done:
        from beadm import mountbe
        return self._done(lambda: mountbe.mount(self, name, directory))

    def umount(self, target: str, *, force: bool = False) -> Done:
        from beadm import mountbe
        return self._done(lambda: mountbe.umount(self, target, force=force))


@contextlib.contextmanager
def opened(backend: str = "auto", *, root: str | None = None, dry_run: bool = False,
           lock_wait: float = 5.0) -> Iterator[BeManager]:
    """:func:`beadm.open`: a manager over the real runner and the named backend; what the
    backend still holds mounted is released on leaving."""
    from beadm.lock import Lock
    from beadm.registry import make_backend
    from beadm.runner import SubprocessRunner

    runner = SubprocessRunner(dry_run=dry_run)
    bes = BeManager(runner, make_backend(backend, runner), root=root,
                    lock=Lock(wait=lock_wait))
    try:
        yield bes
    finally:
        bes.backend.release()


__all__ = [
    "AUTO_UPGRADE", "MAX_DESCRIPTION_LEN", "NOT_BOOTABLE", "STATE_CREATING",
    "STATE_DESTROYING", "STATE_FAILED", "STATE_RENAMING", "STATE_UPGRADING", "_HOST_NS",
    "_STALE", "AutoSnapshot", "BeInfo", "BeManager", "Done", "Listing", "Pruned", "TrialOutcome",
    "Upgraded", "_HostNsRunner", "_bootable", "_check_description", "_check_len",
    "_mount_plan", "_needs_host_ns", "_now", "_refuse_case_clash", "_rmdir", "_suppressed",
    "_unprintable", "check_component",
]
