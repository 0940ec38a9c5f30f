"""The BE library: what a BE is, where BEs live, and every lifecycle command with its rules.

A BE is a direct child filesystem of the *BE root* (``rpool/ROOT``), together with its
descendant datasets. The BE root is the parent of the dataset mounted at ``/`` unless the
caller names it. Changing commands hold the lock, clean up what a killed ``create`` left
behind (datasets and snapshots marked ``org.beadm:state=creating``), then do their work.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from beadm import confined
from beadm import mounts as mnt
from beadm import watchdog as wd
from beadm.backend import BeRef, BootBackend, BootState, EspUsage, PendingTrial
from beadm.errors import (
    BeadmError,
    ClusterGuardError,
    ExistsError,
    InvalidNameError,
    NotFoundError,
    RefusedError,
    UnsupportedError,
    UpgradeError,
    UsageError,
)
from beadm.lock import Lock
from beadm.names import (
    MAX_DATASET_LEN,
    check_be_name,
    check_component,
    check_new_be_name,
    same_but_case,
    split_be_snapshot,
)
from beadm.record import record, replace
from beadm.runner import Result, Runner
from beadm.tree import AUTO_PREFIX, SNAP_PREFIX, BootEnv, Tree, is_beadm_snapshot
from beadm.txn import UndoLog
from beadm.zfs import (
    PROP_APT_RUN,
    PROP_AUTO,
    PROP_DESCRIPTION,
    PROP_IMPORTANT,
    PROP_KEEP,
    PROP_STATE,
    SNAPSHOT_PROPS,
    Dataset,
    PropValue,
    Zfs,
)

if TYPE_CHECKING:  # imported where used: each is one command's (start-up time, issue 15)
    import datetime as dt

    from beadm import pvestate, retention, rollback_guard
    from beadm import upgrade as upg

log = logging.getLogger(__name__)

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

#: Properties ``create -o`` may not set: beadm decides them (the clone must not mount
#: itself over ``/``) or they are beadm's own.
_OWNED_PROPS = frozenset({"canmount", "mountpoint", "origin"})

#: Properties never copied to a clone: fixed at creation or inherited from the origin.
_NOT_COPIED = frozenset(
    {
        "canmount",
        "encryption",
        "keyformat",
        "keylocation",
        "pbkdf2iters",
        "casesensitivity",
        "normalization",
        "utf8only",
        "volsize",
        "volblocksize",
        "origin",
        PROP_STATE,
        PROP_DESCRIPTION,
        # what beadm made by itself, and a pin: marks of that object, not of its clones
        PROP_AUTO,
        PROP_IMPORTANT,
        PROP_APT_RUN,
        PROP_KEEP,
    }
)
#: The marks ``prune`` reads (set locally) on BE roots and snapshots.
_PRUNE_PROPS = (*SNAPSHOT_PROPS,)
#: ``org.beadm:auto`` of the BEs ``beadm upgrade`` makes.
AUTO_UPGRADE = "upgrade"
#: ``org.beadm:keep`` values that do not pin; any other value does (``y``, a date, ...):
#: a mistyped yes must not let the snapshot or BE go.
_NOT_PINNED = ("", "no", "off", "false", "0")


def _pins(keep: str) -> bool:
    """True when an ``org.beadm:keep`` value pins (anything but no/off/false/0/empty)."""
    return keep.strip().lower() not in _NOT_PINNED


@record
class BeInfo:
    """One BE as ``list`` shows it."""

    be: BootEnv
    running: bool
    next_boot: bool
    once: bool
    mounted_at: str | None  # where the BE root is mounted, if anywhere

    @property
    def state(self) -> str | None:
        """Its ``org.beadm:state``: ``failed`` (an upgrade failed in it), ``upgrading``
        (an upgrade runs), ``creating`` / ``destroying`` (half-created or half-destroyed:
        the next changing command removes it), ``renaming`` (a rename to finish), else
        None. Every BE is listed, whatever its state: one whose clean-up keeps failing is
        not hidden."""
        s = self.be.root.state
        return s.partition(":")[0] or None

    @property
    def active(self) -> str:
        flags = ("N" if self.running else "") + ("R" if self.next_boot else "")
        flags += "T" if self.once else ""
        return flags or "-"


@record
class TrialOutcome:
    """What ``trial_boot`` did: ``none`` (no trial pending), ``confirmed`` (the BE on trial
    is the default now), ``failed`` (a check failed: the previous default is back),
    ``given-up`` (another BE is running: the previous default stays), ``settled`` (the
    checks ran, but by then another command had ended the trial: nothing changed),
    ``ended`` (this boot is a trial's, ended by another command before ``trial_boot`` ran:
    its watchdog is stopped)."""

    kind: str
    be: str | None = None
    why: tuple[str, ...] = ()


@record
class Pruned:
    """What ``prune`` decided (and, unless a dry run, did), with the pool's and the ESPs'
    space before (``esps`` None: unknown, or not looked at: no automatic BE may go)."""

    decisions: tuple[retention.Decision, ...]
    space: retention.Space
    policy: retention.Policy
    pool: str
    bes: tuple[retention.BeDecision, ...] = ()
    esps: tuple[EspUsage, ...] | None = None

    def esp_free_after(self, esp: EspUsage) -> int:
        """The ESP's free bytes once the BEs that go are gone."""
        from beadm import retention

        return retention.esp_free_after(esp, {b.be.name for b in self.bes if b.destroy})


@record
class AutoSnapshot:
    """What the apt hook did: ``snapshot`` taken now, or ``same_run`` (an earlier dpkg
    session of this apt run took it), and the prune after it."""

    snapshot: str
    same_run: bool
    pruned: Pruned


@record
class Upgraded:
    """What ``upgrade`` did: the new BE (ready to try), cloned from ``source``, and the
    package changes apt made in it (empty in a dry run)."""

    be: BeRef
    source: str
    apt_args: tuple[str, ...]
    changes: tuple[upg.Change, ...]


@record
class Listing:
    root: str
    pool: str
    bootfs: str | None  # None: not asked (listing(bootfs=False) where the backend decides R)
    state: BootState
    bes: tuple[BeInfo, ...]


#: Changing commands that mount, unmount or make ZFS (un)mount something: they must run in
#: the host's mount namespace, so the backend's held session (a private namespace, see
#: beadm.sdboot.host) is released before each one.
_HOST_NS: tuple[tuple[str, ...], ...] = (
    ("mount",), ("umount",), ("zfs", "destroy"), ("zfs", "rename"), ("zfs", "create"),
    ("zfs", "promote"), ("zfs", "mount"), ("zfs", "unmount"), ("zfs", "umount"),
    ("zpool", "export"), ("systemctl",), ("proxmox-boot-tool",),
)


def _needs_host_ns(argv: Sequence[str]) -> bool:
    if any(tuple(argv[: len(p)]) == p for p in _HOST_NS):
        return True
    # a mountpoint change remounts; canmount=off unmounts
    return tuple(argv[:2]) == ("zfs", "set") and len(argv) > 2 and (
        argv[2].startswith("mountpoint=") or argv[2] == "canmount=off")


class _HostNsRunner:
    """The injected runner, releasing the backend's held session before every changing
    command that must run in the host's mount namespace (:data:`_HOST_NS`)."""

    def __init__(self, inner: Runner, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release = release

    @property
    def dry_run(self) -> bool:
        return self._inner.dry_run

    def run(self, argv: Sequence[str], *, readonly: bool = False,
            check: bool = True) -> Result:
        if not readonly and _needs_host_ns(argv):
            self._release()
        return self._inner.run(argv, readonly=readonly, check=check)


class BeManager:
    """Every BE operation. Dependencies are injected; nothing here prints or exits."""

    def __init__(
        self,
        runner: Runner,
        backend: BootBackend,
        *,
        root: str | None = None,
        mountinfo: Path = mnt.MOUNTINFO,
        lock: Lock | None = None,
        clock: Callable[[], dt.datetime] | None = None,  # default: datetime.now
        running_root: Path = Path("/"),
        out: TextIO | None = None,
        chroot: Callable[[Runner, list[tuple[str, str]]], upg.Chroot] | None = None,
    ) -> None:
        self.backend = backend
        self._raw_runner = runner
        self.runner: Runner = _HostNsRunner(runner, self._release)
        self._chroot = chroot  # upgrade's chroot (tests: fake namespace, temp dirs)
        self._running_root = running_root  # where the running BE's files are (tests: a dir)
        self._out = out  # a dry run's "would ..." lines (default: standard output)
        self.zfs = Zfs(self.runner)
        self._root_override = root
        self._mountinfo = mountinfo
        self._lock = lock if lock is not None else Lock()
        self._clock = clock if clock is not None else _now
        self._root: str | None = None
        self._root_checked = False
        self._altroot_value: str | None = None

    # -- where BEs live ------------------------------------------------------------------

    def mounts(self) -> list[mnt.Mount]:
        return mnt.read_mounts(self._mountinfo)

    # -- one backend session per command (issue 15) ----------------------------------------

    def _hold(self) -> AbstractContextManager[None]:
        """The backend keeps one session (its private namespace, the ESPs and the target
        BE mounted once) for the whole command, where it can."""
        return self.backend.hold()

    def _release(self) -> None:
        self.backend.release()

    def _view(self, ref: BeRef) -> Callable[[bool], Path | None]:
        """BE ``ref``'s root dataset as the backend's held session has it mounted (mounting
        it there if needed; ``writable``), None when the backend holds none."""
        def get(writable: bool) -> Path | None:
            return self.backend.be_view(ref, writable=writable)

        return get

    def _altroot(self) -> str:
        """The pool's ``altroot`` (fixed while the pool is imported: asked once, with
        ``bootfs``; any :meth:`_bootfs` asked before has brought it)."""
        if self._altroot_value is None:
            self._read_pool()
        assert self._altroot_value is not None
        return self._altroot_value

    def _read_pool(self) -> str:
        """``bootfs`` and ``altroot`` with one ``zpool get`` (issue 15); keeps altroot."""
        got = self.zfs.pool_props(self.pool, ("bootfs", "altroot"))
        self._altroot_value = got["altroot"]
        return got["bootfs"]

    @property
    def root(self) -> str:
        """The BE root dataset (e.g. ``rpool/ROOT``)."""
        if self._root is None:
            if self._root_override is not None:
                root = self._root_override.rstrip("/")
                if not root or "@" in root or root.startswith("/"):
                    raise UsageError(f"--root must be a dataset name, got {self._root_override!r}")
                if not self.zfs.exists(root):
                    raise NotFoundError(f"BE root {root} does not exist")
            else:
                top = mnt.root_dataset(self.mounts())
                if top is None or "/" not in top:
                    # the real cause first where it is that (no OpenZFS tools: the runner
                    # says "zfs: command not found")
                    self.zfs.version()
                    raise UnsupportedError(
                        "/ is not a ZFS dataset below a BE root; use --root DATASET"
                    )
                root = top.rpartition("/")[0]
            self._root = root
        return self._root

    @property
    def pool(self) -> str:
        return self.root.partition("/")[0]

    def running_name(self) -> str | None:
        """The BE mounted at ``/`` right now, if it lives under the BE root."""
        top = mnt.root_dataset(self.mounts())
        if top is not None and top.rpartition("/")[0] == self.root:
            return top.rpartition("/")[2]
        return None

    def _tree(self, *, snapshots: bool = True) -> Tree:
        tree = Tree(self.root, self.zfs.list_tree(self.root, snapshots=snapshots))
        if self._root_override is not None and not self._root_checked:
            self._check_root(tree)
            self._root_checked = True
        return tree

    def _check_root(self, tree: Tree) -> None:
        """A root named with ``--root`` must be a BE root: not a pool, in the pool of the
        running BE (if ``/`` is ZFS), and every child a root file system (mountpoint
        ``/``). Else ``sync`` would take ``ROOT`` and ``data`` for BEs and remove every
        boot entry of the real ones."""
        root = tree.root
        if "/" not in root:
            raise UsageError(f"--root {root} is a pool, not a BE root (e.g. {root}/ROOT)")
        top = mnt.root_dataset(self.mounts())
        if top is not None and top.partition("/")[0] != self.pool:
            raise RefusedError(
                f"--root {root} is in another pool than the running BE ({top})"
            )
        children = [tree.fs[tree.be_dataset(n)] for n in tree.be_names()]
        if not children:
            raise NotFoundError(f"--root {root} has no BE (no child file system)")
        altroot = self._altroot().rstrip("/")
        roots = {"/", altroot} if altroot else {"/"}
        for d in children:
            if d.mountpoint not in roots:
                raise RefusedError(
                    f"--root {root} is not a BE root: its child {d.name} has mountpoint "
                    f"{d.mountpoint or '-'}, not /"
                )

    def _bootfs(self) -> str:
        """The pool's ``bootfs`` now (asked every time; altroot comes with it)."""
        return self._read_pool()

    def _ref(self, be: BootEnv, running: str | None) -> BeRef:
        return BeRef(be.name, be.dataset, be.description, be.name == running)

    def _need(self, tree: Tree, name: str) -> BootEnv:
        if not tree.has_be(name):
            raise NotFoundError(f"BE {name} does not exist under {tree.root}")
        return tree.be(name)

    @contextmanager
    def _changing(self, *, boot: bool = False) -> Iterator[Tree]:
        """Hold the lock; yield the tree with stale half-created BEs removed. ``boot``: the
        command changes what boots, so the backend may refuse it first (``preflight``)."""
        with self._lock, self._hold():
            if boot:
                self._preflight()
            yield self._cleanup_stale(self._tree())

    def _preflight(self) -> None:
        self.backend.preflight()

    # -- queries ---------------------------------------------------------------------------

    def listing(self, *, snapshots: bool = True, bootfs: bool = True) -> Listing:
        """Every BE with N/R/T flags: one ``zfs list`` plus one ``zpool get``. Without
        ``snapshots`` the BEs' snapshot lists are empty (and ``zfs list`` skips them: with
        thousands of snapshots they are most of its time); space figures are the same."""
        with self._hold():
            return self._listing(snapshots=snapshots, want_bootfs=bootfs)

    def _listing(self, *, snapshots: bool, want_bootfs: bool) -> Listing:
        tree = self._tree(snapshots=snapshots)
        running = self.running_name()
        # every BE, also one being created or destroyed (BeInfo.state says so)
        bes = tree.bes()
        state = self.backend.boot_state([self._ref(b, running) for b in bes])
        next_boot = state.next_boot
        # the pool's bootfs decides R only where the backend does not (without ``bootfs``
        # it is asked only then: one zpool process less for the table, issue 15)
        fallback = next_boot is None and state.decides
        bootfs = self._bootfs() if want_bootfs or fallback else None
        if fallback and bootfs is not None and bootfs.rpartition("/")[0] == self.root:
            next_boot = bootfs.rpartition("/")[2]
        where = mnt.zfs_mounts(self.mounts())
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
        return Listing(self.root, self.pool, bootfs, state, infos)

    def rollback_reports(
        self, bes: Sequence[BootEnv]
    ) -> dict[str, rollback_guard.Report | None]:
        """What booting each of ``bes`` instead of the running BE would change (cluster,
        network; beadm.rollback_guard): each BE is mounted read-only for it. None for
        every BE when no BE runs (nothing to compare with)."""
        running = self.running_name()
        with self._hold():
            return {b.name: self._rollback_report(b, running) for b in bes}

    def _rollback_report(self, be: BootEnv, running: str | None) -> rollback_guard.Report | None:
        from beadm import rollback_guard

        if running is None:
            return None
        if be.name == running:
            return rollback_guard.Report(be.name, running)
        plan = [(d.name, rel) for d, rel in _mount_plan(be)]
        view = self._view(self._ref(be, running))
        return rollback_guard.inspect(
            self.runner, plan, self.mounts(), be=be.name, running=running,
            running_root=self._running_root, be_root=self.root, view=lambda: view(False))

    def check(self) -> list[str]:
        with self._hold():
            tree = self._tree()
            running = self.running_name()
            return self.backend.check([self._ref(b, running) for b in _bootable(tree)])

    # -- create ----------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        source: str | None = None,
        description: str = "",
        props: list[str] | None = None,
    ) -> BeRef | str:
        """Create BE ``name`` (a clone of ``source``), or ``BE@snap`` (a snapshot).

        Returns the new BE's :class:`BeRef`, or the snapshot's full name.
        """
        if "@" in name:
            if source is not None or description or props:
                raise UsageError("create BE@snapshot takes no -e, -d or -o")
            return self.snapshot(name)
        check_new_be_name(name)
        if source is not None:
            split_be_snapshot(source)
        user_props = _parse_props(props or [])
        _check_description(description)
        with self._changing(boot=True) as tree:
            return self._create(tree, name, source, description, user_props)

    def snapshot(self, spec: str) -> str:
        """``create BE@snap``: a recursive snapshot of the BE's datasets."""
        be_name, snap = split_be_snapshot(spec)
        assert snap is not None
        with self._changing() as tree:
            be = self._need(tree, be_name)
            full = f"{be.dataset}@{snap}"
            if any(tree.snapshot(f"{d.name}@{snap}") for d in be.datasets):
                raise ExistsError(f"snapshot {be_name}@{snap} already exists")
            _check_len(max((f"{d.name}@{snap}" for d in be.datasets), key=len))
            self.zfs.snapshot(full, recursive=True)
            return full

    def _source(self, tree: Tree, source: str | None) -> tuple[BootEnv, str | None]:
        if source is None:
            name = self.running_name()
            if name is None:
                bootfs = self._bootfs()
                if bootfs.rpartition("/")[0] == self.root:
                    name = bootfs.rpartition("/")[2]
            if name is None or not tree.has_be(name):
                raise UsageError(f"no running BE under {self.root}; name the source with -e")
            return tree.be(name), None
        be_name, snap = split_be_snapshot(source)
        be = self._need(tree, be_name)
        if snap is not None:
            for d in be.datasets:
                if tree.snapshot(f"{d.name}@{snap}") is None:
                    if d is be.root:
                        raise NotFoundError(f"snapshot {be_name}@{snap} does not exist")
                    raise NotFoundError(
                        f"snapshot {d.name}@{snap} does not exist: a BE snapshot must cover "
                        "the BE's child datasets (beadm create BE@snap, or zfs snapshot -r)"
                    )
        return be, snap

    def _new_snapname(self, tree: Tree, src: BootEnv) -> str:
        base = SNAP_PREFIX + self._clock().strftime("%Y%m%d-%H%M%S")
        snap, n = base, 0
        while any(tree.snapshot(f"{d.name}@{snap}") for d in src.datasets):
            n += 1
            snap = f"{base}-{n}"
        return snap

    def _create(
        self,
        tree: Tree,
        name: str,
        source: str | None,
        description: str,
        user_props: list[tuple[str, str]],
        *,
        upgrading: bool = False,
    ) -> BeRef:
        """The clone. ``upgrading``: no boot entries yet, and the BE root ends up marked
        ``upgrading`` instead of unmarked (``upgrade`` finishes it)."""
        target = tree.be_dataset(name)
        if target in tree.fs:
            raise ExistsError(f"BE {name} already exists")
        _refuse_case_clash(name, tree.be_names())
        src, snap = self._source(tree, source)
        made_snapshot = snap is None
        if snap is None:
            snap = self._new_snapname(tree, src)
        for d in src.datasets:
            _check_len(target + d.name[len(src.dataset) :])
            _check_len(f"{d.name}@{snap}")
        local: dict[str, list[PropValue]] = {}
        for pv in self.zfs.local_props(src.dataset):
            local.setdefault(pv.dataset, []).append(pv)
        # zfs shows mountpoints with the pool's altroot in front (a rescue import): the
        # stored value is what the clone must get.
        altroot = self._altroot()

        undo = UndoLog()
        try:
            if made_snapshot:
                self.zfs.snapshot(
                    f"{src.dataset}@{snap}", recursive=True, props={PROP_STATE: STATE_CREATING}
                )
                undo.done(
                    f"snapshot {src.dataset}@{snap}",
                    lambda: self.zfs.destroy(f"{src.dataset}@{snap}", recursive=True),
                )
            clones: list[str] = []
            for d in src.datasets:
                clone = target + d.name[len(src.dataset) :]
                is_root = d is src.root
                opts = _clone_props(
                    d,
                    local.get(d.name, []),
                    description=description if is_root else "",
                    user=user_props if is_root else [],
                    altroot=altroot,
                )
                self.zfs.clone(f"{d.name}@{snap}", clone, opts)
                clones.append(clone)
                undo.done(f"clone {clone}", functools.partial(self.zfs.destroy, clone))
            # Still marked: a kill from here on leaves a BE the next command removes.
            self._shared_state_into(name, target, new=True)
            ref = BeRef(name, target, description, False)
            if not upgrading:
                undo.done(f"boot entries of {name}", lambda: self.backend.post_destroy(ref))
                self.backend.post_create(ref)
            # Commit: clear the in-progress marks, in one `zfs inherit` (one process, not
            # one a dataset: issue 15). zfs clears them one by one in name order, so a kill
            # can leave any subset cleared; each is a state the next changing command
            # finishes (_cleanup_stale): a BE whose root is still marked is removed with
            # its snapshot, a marked child dataset or snapshot of a finished BE is unmarked.
            marked = [f"{d.name}@{snap}" for d in src.datasets] if made_snapshot else []
            marked += [c for c in clones if not (upgrading and c == target)]
            if marked:
                self.zfs.inherit_all(marked, PROP_STATE)
            if upgrading:  # its mark changes last
                self.zfs.set(target, PROP_STATE, STATE_UPGRADING)
        except BaseException:
            if not self.runner.dry_run:  # a dry run did nothing: there is nothing to undo
                self._release()  # the undo starts from fresh ESP mounts, as a new command
                undo.rollback()
            raise
        return ref

    # -- upgrade ---------------------------------------------------------------------------

    def upgrade(self, name: str | None, apt_args: Sequence[str] = (), *,
                description: str = "") -> Upgraded:
        """Clone the running BE as ``name``, run ``apt-get APT_ARGS`` (default
        ``full-upgrade -y``) in it in a chroot (``beadm.upgrade``), then write its boot
        entries: it is ready to try (``activate --trial``), nothing boots it yet.

        The clone is marked ``upgrading`` while apt runs; if apt (or writing the entries)
        fails, or beadm is interrupted, it is marked ``failed`` and the error says so; a
        killed upgrade leaves ``upgrading``, which the next changing command turns into
        ``failed``. The running BE, the pool's ``bootfs`` and what boots next are never
        changed."""
        from beadm import upgrade as upg

        args = tuple(apt_args) or upg.DEFAULT_APT_ARGS
        if name is not None:
            check_new_be_name(name)
        _check_description(description)
        with self._changing(boot=True) as tree:
            running = self.running_name()
            if running is None or not tree.has_be(running):
                raise RefusedError(f"upgrade clones the running BE: no BE under {self.root} "
                                   "is mounted at /")
            if name is None:
                name = self._upgrade_name(tree)
            src = tree.be(running)
            ref = self._create(tree, name, None, description or upg.describe(running, args),
                               [(PROP_AUTO, AUTO_UPGRADE)], upgrading=True)
            plan = [(ref.dataset + d.name[len(src.dataset):], rel)
                    for d, rel in _mount_plan(src)]
            changes: tuple[upg.Change, ...] = ()
            try:
                changes = self._apt_in(plan, args)
            except BaseException as exc:
                self._mark_failed(ref)
                if isinstance(exc, Exception):
                    raise UpgradeError(
                        f"upgrade in BE {name} failed: {exc}; BE {name} is marked failed "
                        f"(beadm destroy {name} removes it); the running BE {running} and "
                        "what boots next are unchanged") from exc
                log.warning("warning: upgrade in BE %s interrupted: it is marked failed "
                            "(beadm destroy %s removes it)", name, name)
                raise
            try:
                self.backend.post_create(ref)
            except BaseException:
                self._mark_failed(ref)
                log.warning("warning: the boot entries of BE %s could not be written: it is "
                            "marked failed (beadm destroy %s removes it)", name, name)
                with _suppressed("removing the boot entries of the failed upgrade"):
                    self.backend.post_destroy(ref)
                raise
            important = upg.importance(changes)
            if important:
                self.zfs.set(ref.dataset, PROP_IMPORTANT, important)
            self.zfs.inherit(ref.dataset, PROP_STATE)
            return Upgraded(ref, running, args, changes)

    def _upgrade_name(self, tree: Tree) -> str:
        base = "upgrade-" + self._clock().strftime("%Y%m%d-%H%M%S")
        name, n = base, 0
        while tree.has_be(name) or same_but_case(name, tree.be_names()):
            n += 1
            name = f"{base}-{n}"
        return name

    def _apt_in(self, plan: list[tuple[str, str]], args: tuple[str, ...]) -> tuple[
            upg.Change, ...]:
        from beadm import upgrade as upg

        self._release()  # the chroot makes its own namespace from the host's
        chroot = (self._chroot(self._raw_runner, plan) if self._chroot is not None
                  else upg.Chroot(self._raw_runner, plan, out=self._out))
        with chroot.mounted() as root:
            before = upg.packages(root)
            res = root.run(upg.apt_argv(args), check=False)
            for line in (res.stdout + res.stderr).splitlines():
                log.info("apt: %s", line)
            if res.returncode != 0:
                tail = [ln for ln in res.stderr.splitlines() if ln.strip()]
                why = tail[-1].strip() if tail else f"exit status {res.returncode}"
                import shlex

                raise UpgradeError(f"apt-get {shlex.join(args)} exited {res.returncode}: {why}")
            after = upg.packages(root)
        return upg.diff(before, after)

    def _mark_failed(self, ref: BeRef) -> None:
        if self.runner.dry_run:
            return
        with _suppressed(f"marking BE {ref.name} failed"):
            self.zfs.set(ref.dataset, PROP_STATE, STATE_FAILED)

    # -- destroy ---------------------------------------------------------------------------

    def destroy_check(self, spec: str, *, force: bool = False) -> str:
        """Validate a destroy without changing anything; return what would be destroyed."""
        be_name, snap = split_be_snapshot(spec)
        tree = self._tree()
        be = self._need(tree, be_name)
        if snap is not None:
            self._snapshot_to_destroy(tree, be, snap)
            return f"snapshot {be_name}@{snap}"
        with self._hold():  # the guards' looks into BEs: in the backend's namespace
            self._refuse_destroy(tree, be)
            if not force:
                self._refuse_unique_vz(tree, be)
        return f"BE {be_name} ({be.dataset} and {len(be.datasets) - 1} child datasets)"

    def destroy(self, spec: str, *, origin: bool = False, force: bool = False) -> None:
        """Destroy a BE (promoting dependent clones first) or a BE snapshot."""
        be_name, snap = split_be_snapshot(spec)
        with self._changing() as tree:
            be = self._need(tree, be_name)
            if snap is not None:
                self._destroy_snapshot(tree, be, snap)
                return
            self._refuse_destroy(tree, be)
            if not force:
                self._refuse_unique_vz(tree, be)
            self._unmount_be(be, force=False)
            self._destroy_be(tree, be, remove_origin=origin, beadm_only=False)

    def _destroy_snapshot(self, tree: Tree, be: BootEnv, snap: str) -> None:
        """``destroy BE@snap`` (also ``prune``'s): refused while it has clones."""
        full = self._snapshot_to_destroy(tree, be, snap)
        self.zfs.destroy(full, recursive=True)

    def _snapshot_to_destroy(self, tree: Tree, be: BootEnv, snap: str) -> str:
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

    def _refuse_destroy(self, tree: Tree, be: BootEnv) -> None:
        self._preflight()
        running = self.running_name()
        if be.name == running:
            raise RefusedError(f"BE {be.name} is the running BE")
        refs = [self._ref(b, running) for b in tree.bes()]
        state = self.backend.boot_state(refs)
        bootfs = self._bootfs()
        if be.name in (state.next_boot, state.once) or bootfs == be.dataset:
            raise RefusedError(f"BE {be.name} boots next; activate another BE first")

    def _refuse_unique_vz(self, tree: Tree, be: BootEnv) -> None:
        """Refuse when the BE holds vzdump backups, ISOs or templates found nowhere else."""
        running = self.running_name()
        others = [b for b in tree.bes() if b.name not in (be.name, running)
                  and b.root.state != STATE_CREATING]
        plans = [[(d.name, rel) for d, rel in _mount_plan(b)] for b in [be, *others]]
        from beadm import vzguard

        def ro(b: BootEnv) -> Callable[[], Path | None]:
            view = self._view(self._ref(b, running))
            return lambda: view(False)

        vzguard.refuse_unique(self.runner, be.name, plans[0], plans[1:], self.mounts(),
                              views={b.dataset: ro(b) for b in [be, *others]})

    def shared_state(self, *, move: bool, out: TextIO | None = None) -> list[pvestate.Finding]:
        """Proxmox state inside the running BE (with ``move``: moved out; beadm.pvestate)."""
        from beadm import pvestate

        with self._changing():
            running = self.running_name()
            if running is None:
                if move:
                    raise UsageError(f"no running BE under {self.root}: nothing to move from")
                return []
            mover = pvestate.Mover(self.runner, pool=self.pool, be_root=self.root,
                                   be_dataset=f"{self.root}/{running}",
                                   mountinfo=self._mountinfo, out=out)
            return mover.move_all() if move else mover.findings()

    def _shared_state_into(self, name: str, dataset: str, *, new: bool) -> None:
        """Give BE ``name`` the drop-ins of the shared state in service (beadm.pvestate), if
        it lacks them: a BE cloned from a snapshot taken before ``init --shared-state``.
        Warns once (when they are written) that its own copy of that state is not used."""
        from beadm import pvestate

        paths = pvestate.in_use(self.zfs.list_tree(self.pool, snapshots=False, depth=1),
                                self.pool, altroot=self._altroot())
        if not paths:
            return
        out = self._out if self._out is not None else sys.stdout
        if new and self.runner.dry_run:  # the clone does not exist: nothing to look at
            print(f"would write the shared-state drop-ins into {dataset} where missing "
                  f"({', '.join(paths)} are shared datasets)", file=out)
            return
        done = pvestate.prepare_be(self.runner, dataset, paths, mountinfo=self._mountinfo,
                                   out=out, view=self._view(BeRef(name, dataset)))
        if done.written:
            log.info("BE %s: wrote %s", name, ", ".join(str(p) for p in done.written))
        if done.written and done.hidden:
            log.warning(
                "warning: BE %s keeps its own %s from before the shared-state move: not used "
                "(the shared datasets are mounted over it at boot)",
                name, ", ".join(done.hidden))

    def _destroy_be(
        self, tree: Tree, be: BootEnv, *, remove_origin: bool, beadm_only: bool
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
                clones = set(o.clones) if o is not None else self._clones(d.origin)
                origins.append((d.origin, clones - {d.name}))
        for clone in promote:
            log.info("promoting %s", clone)
            self.zfs.promote(clone)
        self.zfs.destroy(be.dataset, recursive=True)
        gone = set(inside)
        for snap, others in origins:
            snapname = snap.partition("@")[2]
            if others - inside:
                continue
            if remove_origin or is_beadm_snapshot(snapname):
                self.zfs.destroy(snap)
                gone.add(snap)
            elif snapname.startswith(AUTO_PREFIX):
                log.info("kept automatic snapshot %s ('beadm prune' decides)", snap)
            elif not beadm_only:
                log.warning("kept origin snapshot %s (not made by beadm; -o removes it)", snap)
        self.backend.post_destroy(BeRef(be.name, be.dataset, be.description, False))
        return gone

    def _clones(self, snapshot: str) -> set[str]:
        value = self.zfs.get(snapshot, "clones")
        return {c for c in value.split(",") if c}

    # -- automatic snapshots (the apt hook) and their retention ---------------------------

    def auto_snapshot(
        self, *, description: str, important: str, run: str, policy: retention.Policy
    ) -> AutoSnapshot:
        """Snapshot the running BE (or, with ``--root``, the one that boots next) as
        ``beadm-auto-YYYYmmdd-HHMMSS`` marked ``org.beadm:auto=apt``, unless the same apt
        ``run`` took one already (then only its importance is added); prune before and
        after (a prune that fails is a warning: the snapshot is still taken). Refused,
        with nothing taken, when the pool stays below the floor."""
        _check_description(description)
        with self._changing() as tree:
            be, _ = self._source(tree, None)
            props = self.zfs.snapshot_props(self.root, SNAPSHOT_PROPS)
            for s in reversed(tree.snaps.get(be.dataset, []) if run else []):
                mine = props.get(s.name, {})
                if mine.get(PROP_APT_RUN) == run and PROP_AUTO in mine:
                    if important and not mine.get(PROP_IMPORTANT):
                        self.zfs.set(s.name, PROP_IMPORTANT, important)
                    return AutoSnapshot(s.name, True, self._prune_or_warn(tree, policy))
            # the snapshot to go back to matters more than the room a prune makes: a prune
            # that fails is a warning, and the snapshot is taken if the pool is above the floor
            self._prune_or_warn(tree, policy)
            tree = self._tree()
            space = self._space()
            floor = policy.pool_min_free.of(space.size)
            if space.free < floor:
                raise RefusedError(
                    f"no automatic snapshot: pool {self.pool} has {space.free} bytes free, "
                    f"below pool_min_free ({policy.pool_min_free}, {floor} bytes), even "
                    "after pruning"
                )
            base = AUTO_PREFIX + self._clock().strftime("%Y%m%d-%H%M%S")
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
            self.zfs.snapshot(full, recursive=True, props=marks)  # one atomic step
            return AutoSnapshot(full, False, self._prune_or_warn(self._tree(), policy))

    def _prune_or_warn(self, tree: Tree, policy: retention.Policy) -> Pruned:
        """``_prune``; when it fails, a warning and nothing pruned (what it did stays done)."""
        try:
            return self._prune(tree, policy)
        except BeadmError as exc:
            log.warning("warning: prune failed: %s", exc)
            return Pruned((), self._space(), policy, self.pool)

    def prune(self, policy: retention.Policy) -> Pruned:
        """Destroy the automatic snapshots and BEs the policy lets go (``beadm.retention``)."""
        with self._changing() as tree:
            return self._prune(tree, policy)

    def _prune(self, tree: Tree, policy: retention.Policy) -> Pruned:
        from beadm import retention

        space = self._space()
        props = self.zfs.snapshot_props(self.root, _PRUNE_PROPS, types="filesystem,snapshot")
        snaps = self._auto_snaps(tree, props)
        bes, refs = self._auto_bes(tree, props, snaps)
        # the ESPs are looked at only when an automatic BE may go
        esps: tuple[EspUsage, ...] | None = None
        if any(b.auto and not b.held for b in bes):
            esps = self.backend.esp_usage(refs)
        plan = retention.decide_all(snaps, bes, space, esps, policy)
        held = self._held(tree, plan)
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
            why = self._prune_be(bd)
            if why:
                be_decisions[k] = retention.BeDecision(bd.be, False, why)
            else:
                went.add(bd.be.name)
        snap_decisions = []
        if went:
            tree = self._tree()  # promotions moved snapshots; BEs went with theirs
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
                self._destroy_snapshot(tree, tree.be(d.snap.be), d.snap.name.partition("@")[2])
            except BeadmError as exc:  # busy in a way no hold shows: the others still go
                log.warning("warning: prune keeps %s: could not destroy it: %s", d.snap.name, exc)
                snap_decisions[k] = retention.Decision(d.snap, False,
                                                       f"kept: could not destroy it: {exc}")
        return Pruned(tuple(snap_decisions), space, policy, self.pool,
                      tuple(be_decisions), esps)

    def _prune_be(self, d: retention.BeDecision) -> str:
        """Destroy one automatic BE as ``destroy`` does (promoting its clones, then its
        boot entries on every ESP); returns why it was kept instead, or ""."""
        tree = self._tree()  # a promotion before may have changed it
        if not tree.has_be(d.be.name):
            return ""
        be = tree.be(d.be.name)
        try:
            self._refuse_destroy(tree, be)
            self._refuse_unique_vz(tree, be)
        except RefusedError as exc:
            log.warning("warning: prune keeps BE %s: %s", be.name, exc)
            return f"kept: {exc}"
        log.info("destroying BE %s: %s", be.name, d.reason)
        # marked first, its entries next: a kill from here on leaves a BE that boots
        # nothing and that the next changing command finishes destroying
        ref = BeRef(be.name, be.dataset, be.description, False)
        self.zfs.set(be.dataset, PROP_STATE, STATE_DESTROYING)
        try:
            if not self.runner.dry_run:  # (a dry run shows it once, below)
                self.backend.post_destroy(ref)
            self._destroy_be(tree, be, remove_origin=False, beadm_only=True)
        except BeadmError as exc:
            return self._prune_be_failed(be, exc)
        return ""

    def _prune_be_failed(self, be: BootEnv, exc: BeadmError) -> str:
        """After a failed destroy of ``be`` by prune (busy: mounted in another namespace, a
        ``zfs send``'s hold): a BE whose datasets all stand loses its mark and gets its
        entries back, with one warning (left marked, the next changing command would try
        again, fail again, and end); one partly gone stays marked (it is not whole: the
        next changing command finishes it, warning if it fails again). Returns why it was
        kept, or "" when it went (only something after it, its origin snapshot, did not)."""
        now = self._tree(snapshots=False)
        left = [d.name for d in be.datasets if d.name in now.fs]
        if not left:
            log.warning("warning: prune destroyed BE %s, but not all it held: %s", be.name, exc)
            return ""
        if len(left) < len(be.datasets):
            log.warning("warning: prune left BE %s half-destroyed (the next changing command "
                        "finishes it): %s", be.name, exc)
            return f"kept: half-destroyed: {exc}"
        with _suppressed(f"clearing the destroying mark of BE {be.name}"):
            self.zfs.inherit(be.dataset, PROP_STATE)
            # its entries back, as ``sync`` writes them: that reads its kernels through a
            # read-only view (post_create writes its cmdline: a writable mount, which fails
            # while the BE is mounted read-only in another namespace)
            running = self.running_name()
            with _suppressed(f"writing the boot entries of BE {be.name} back (beadm sync "
                             "does)"):
                self.backend.sync([self._ref(b, running) for b in _bootable(self._tree())],
                                  only_if_used=True)
        log.warning("warning: prune keeps BE %s: could not destroy it: %s", be.name, exc)
        return f"kept: could not destroy it: {exc}"

    def _held(self, tree: Tree, plan: retention.Decisions) -> dict[str, str]:
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
        refs = self.zfs.userrefs(sorted(owner))
        out: dict[str, str] = {}
        for name in sorted(owner):
            if refs.get(name, 0) > 0:
                out.setdefault(owner[name], f"{name} has a zfs hold (zfs holds {name})")
        return out

    def _space(self) -> retention.Space:
        from beadm import retention

        used, avail = self.zfs.space(self.pool)
        return retention.Space(free=avail, size=used + avail)

    def _auto_snaps(self, tree: Tree,
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

    def _auto_bes(self, tree: Tree, props: dict[str, dict[str, str]],
                  snaps: list[retention.Snap]) -> tuple[list[retention.Be], list[BeRef]]:
        """Every BE with its marks and, for an automatic one (``org.beadm:auto`` set
        locally on its root), why it is protected, if it is. Also every BE's ref."""
        from beadm import retention

        running = self.running_name()
        bes = [b for b in tree.bes() if b.root.state != STATE_CREATING]
        refs = [self._ref(b, running) for b in bes]
        auto = [b for b in bes if props.get(b.dataset, {}).get(PROP_AUTO)]
        if not auto:
            return [], refs
        refused = ""
        try:
            self._preflight()
        except UnsupportedError as exc:
            refused = f"the boot backend refuses changes here: {exc}"
        state = self.backend.boot_state(refs)
        bootfs = self._bootfs()
        where = mnt.zfs_mounts(self.mounts())
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
                             if not c.startswith(f"{self.root}/"))
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

    # -- stale half-created BEs ----------------------------------------------------------

    def _cleanup_stale(self, tree: Tree) -> Tree:
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

        self._finish_renames(tree, step)
        for be in tree.bes():
            if be.root.state == STATE_UPGRADING:  # its beadm is gone: it held the lock
                log.warning("warning: the upgrade in BE %s was interrupted: marking it failed "
                            "(beadm destroy %s removes it)", be.name, be.name)
                with step(f"marking BE {be.name} failed"):
                    self.zfs.set(be.dataset, PROP_STATE, STATE_FAILED)
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
                self._unmount_be(be, force=True)
                gone |= self._destroy_be(tree, be, remove_origin=False, beadm_only=True)
        for s in marked_snaps:
            if s.name in gone or s.dataset in gone:
                continue
            with step(f"removing half-created snapshot {s.name}"):
                if set(s.clones) - gone:
                    self.zfs.inherit(s.name, PROP_STATE)
                else:
                    log.warning("removing half-created snapshot %s", s.name)
                    self.zfs.destroy(s.name)
                    gone.add(s.name)
        for d in marked_fs:
            with step(f"clearing the creating mark of {d.name}"):
                self.zfs.inherit(d.name, PROP_STATE)
        # after a failure, what is left is read again (a destroy may have gone half-way)
        return self._tree() if failed else tree.without(gone)

    # -- rename ----------------------------------------------------------------------------

    def rename(self, old: str, new: str) -> BeRef:
        """Rename a BE's datasets (without remounting); refuses the running BE.

        Everything that can be checked is checked before the first change (the new name
        valid on FAT, no BE differing only in case, lengths, the backend's own check).
        Then: mark the BE root ``renaming:OLD``, ``zfs rename``, move ``bootfs``, the
        backend's ``post_rename``, clear the mark. A failure undoes every step (the
        backend's with ``post_rename(new, old)``); a kill leaves the mark, and the next
        changing command finishes the rename (:meth:`_finish_renames`).
        """
        check_be_name(old)
        check_new_be_name(new)
        with self._changing(boot=True) as tree:
            be = self._need(tree, old)
            target = tree.be_dataset(new)
            if target in tree.fs:
                raise ExistsError(f"BE {new} already exists")
            _refuse_case_clash(new, [n for n in tree.be_names() if n != old])
            if old == self.running_name():
                raise RefusedError(f"BE {old} is the running BE; renaming it is not supported")
            if be.root.state == STATE_FAILED:
                raise RefusedError(f"BE {old} is a failed upgrade: destroy it, do not rename it")
            for d in be.datasets:
                _check_len(target + d.name[len(be.dataset) :])
            for s in be.snapshots:
                _check_len(target + s.name[len(be.dataset) :])
            old_ref = BeRef(old, be.dataset, be.description, False)
            new_ref = BeRef(new, target, be.description, False)
            self.backend.check_rename(old_ref, new_ref)
            bootfs = self._bootfs()
            undo = UndoLog()
            try:
                self.zfs.set(be.dataset, PROP_STATE, STATE_RENAMING + old)
                undo.done(f"mark of {old}", lambda: self.zfs.inherit(be.dataset, PROP_STATE))
                self.zfs.rename(be.dataset, target)
                backend_ran: list[bool] = []

                def unrename() -> None:
                    self.zfs.rename(target, be.dataset)
                    if backend_ran:
                        self.backend.post_rename(new_ref, old_ref)

                undo.done(f"rename of {old} to {new}", unrename)
                if bootfs == be.dataset:
                    self.zfs.pool_set(self.pool, "bootfs", target)
                    undo.done("bootfs", lambda: self.zfs.pool_set(self.pool, "bootfs", bootfs))
                backend_ran.append(True)
                self.backend.post_rename(old_ref, new_ref)
                self.zfs.inherit(target, PROP_STATE)
            except BaseException:
                self._release()  # the undo starts from fresh ESP mounts, as a new command
                undo.rollback()
                raise
            return new_ref

    def _finish_renames(self, tree: Tree,
                        step: Callable[[str], AbstractContextManager[None]]) -> None:
        """Finish what a killed ``rename`` left (BE roots marked ``renaming:OLD``), each
        BE in a ``step`` of the clean-up."""
        bootfs: list[str] = []
        for be in tree.bes():
            state = be.root.state
            if not state.startswith(STATE_RENAMING):
                continue
            with step(f"finishing the interrupted rename of BE {be.name}"):
                self._finish_rename(tree, be, state[len(STATE_RENAMING) :], bootfs)

    def _finish_rename(self, tree: Tree, be: BootEnv, old: str, bootfs: list[str]) -> None:
        """Finish one killed rename of ``old`` to ``be`` (``bootfs``: the pool's, once read)."""
        if old and old != be.name:
            log.warning("finishing the interrupted rename of BE %s to %s", old, be.name)
            old_ds = tree.be_dataset(old)
            if not bootfs:
                bootfs.append(self._bootfs())
            if bootfs[0] == old_ds:
                self.zfs.pool_set(self.pool, "bootfs", be.dataset)
            old_ref = BeRef(old, old_ds, be.description, False)
            self.backend.post_rename(old_ref, BeRef(be.name, be.dataset, be.description))
        self.zfs.inherit(be.dataset, PROP_STATE)

    # -- activate / init / sync -------------------------------------------------------------

    def activate(
        self,
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
        with self._changing(boot=True) as tree:
            return self._activate(tree, name, temporary=temporary, force=force,
                                  on_report=on_report)

    def _activate(self, tree: Tree, name: str, *, temporary: bool, force: bool,
                  on_report: Callable[[rollback_guard.Report], None] | None) -> BeRef:
        """``activate``, under the lock the caller holds (``trial_boot`` confirms a trial
        under the lock it re-verified the trial with)."""
        be = self._need(tree, name)
        running = self.running_name()
        bootfs = self._bootfs()  # first: altroot (the drop-ins) comes with it (issue 15)
        self._before_it_boots(be, running, force=force, on_report=on_report)
        ref = self._ref(be, running)
        undo = UndoLog()
        try:
            self._point_pool_at(tree, None if temporary else be.dataset, bootfs, undo)
            self.backend.activate(ref, temporary=temporary)
        except BaseException:
            undo.rollback()
            raise
        return ref

    def _point_pool_at(self, tree: Tree, dataset: str | None, bootfs: str,
                       undo: UndoLog) -> None:
        """The pool's ``bootfs`` (read under this command's lock) to ``dataset`` (None: left
        alone), and no BE dataset with ``canmount=on``: the initramfs mounts the booted BE
        (and its children) explicitly, and `zfs mount -a` must skip every other BE,
        including the one running now (the installer's pve-1 has canmount=on). Each change
        is logged in ``undo``."""
        if dataset is not None and bootfs != dataset:
            self.zfs.pool_set(self.pool, "bootfs", dataset)
            undo.done("bootfs", lambda: self.zfs.pool_set(self.pool, "bootfs", bootfs))
        for other in tree.bes():
            for d in other.datasets:
                if d.canmount == "on":
                    self.zfs.set(d.name, "canmount", "noauto")
                    undo.done(f"canmount of {d.name}",
                              functools.partial(self.zfs.set, d.name, "canmount", "on"))

    def _before_it_boots(self, be: BootEnv, running: str | None, *, force: bool,
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
            self.zfs.inherit(be.dataset, PROP_STATE)
        report = self._rollback_report(be, running)
        if report is not None:
            if on_report is not None:
                on_report(report)
            if report.cluster and not force:
                raise ClusterGuardError(
                    report.cluster,
                    f"not activating {be.name}: booting it can break the Proxmox cluster; "
                    "activate --force does it anyway")
        self._shared_state_into(be.name, be.dataset, new=False)

    def activate_trial(
        self,
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
        with self._changing(boot=True) as tree:  # (the backend's preflight first)
            if not self.backend.trials():
                raise UnsupportedError(f"backend {self.backend.name} has no trial boots "
                                       "(boot counting): 'beadm activate -t' boots a BE once")
            be = self._need(tree, name)
            running = self.running_name()
            if running is None or not tree.has_be(running):
                raise RefusedError(f"activate --trial needs a running BE under {self.root} "
                                   "to fall back to")
            if running == name:
                raise UsageError(f"BE {name} is running: a trial is for another BE")
            bootfs = self._bootfs()  # first: altroot (the drop-ins) comes with it (issue 15)
            self._before_it_boots(be, running, force=force, on_report=on_report)
            back = self._ref(tree.be(running), running)
            undo = UndoLog()
            try:
                self._point_pool_at(tree, back.dataset, bootfs, undo)
                self.backend.activate_trial(self._ref(be, running), back, tries, watchdog)
            except BaseException:
                undo.rollback()
                raise
            return self._ref(be, running)

    def trial_boot(self, checks: Callable[[], list[str]], *,
                   reboot: bool = True,
                   disarm: Callable[[], list[str]] | None = None) -> TrialOutcome:
        """At boot (``beadm-trial.service``): settle a pending trial. Running the BE on trial:
        ``checks()`` pass -> it is activated (the trial ends); they fail -> the previous
        default is restored and (``reboot``) the machine reboots into it (the watchdog stays
        armed: a reboot that hangs is reset too). Running another BE: the trial did not boot
        (or was left from the menu) and is given up.

        Three steps (beadm(8), TRIAL BOOTS). 1: under the lock, what is pending. 2: the
        checks, in the host's own context: the lock released and the backend's session
        closed (no ESP mounted, not in beadm's private mount namespace), since they look at
        the host as its services see it and may take minutes. 3: the decision under the
        lock again, after verifying that the same trial is still the pending one (a command
        run meanwhile may have settled it: then nothing is changed, ``settled``). Once the
        checks passed, every way out of step 3 (confirmed, settled, the lock not had in
        time, the activation failing) stops the trial's watchdog with ``disarm()``: its
        notes go into the outcome, or are logged as warnings when an error follows."""
        state, end = self.backend.trial_state, self.backend.end_trial
        with self._changing(boot=True) as tree:
            running = self.running_name()
            refs = [self._ref(b, running) for b in tree.bes()]
            trial = state(refs)
            if trial is not None and trial.be != running:
                end(refs)
                return TrialOutcome("given-up", trial.be, (f"{running} is running",))
            ended = trial is None and self.backend.booted_trial()
        if trial is None:
            if not ended:
                return TrialOutcome("none")
            # booted as a trial that another command ended before this ran (the admin's
            # activate): its watchdog would reset a host nobody asked to reset
            return TrialOutcome("ended", running, tuple(_disarmed(disarm)))
        self._release()  # (the hold is over: nothing of beadm's stays mounted)
        problems = self._run_checks(checks)
        if problems:
            with self._changing(boot=True) as tree:
                refs = [self._ref(b, running) for b in tree.bes()]
                if not _same_trial(state(refs), trial):
                    return TrialOutcome("settled", trial.be, problems)
                end(refs)
            if reboot:
                self.runner.run(["systemctl", "reboot", "--no-block"])
            return TrialOutcome("failed", trial.be, problems)
        outcome: TrialOutcome | None = None
        try:
            with self._changing(boot=True) as tree:
                refs = [self._ref(b, running) for b in tree.bes()]
                if not _same_trial(state(refs), trial):
                    outcome = TrialOutcome("settled", trial.be)
                else:
                    self._activate(tree, trial.be, temporary=False, force=False,
                                   on_report=None)
                    outcome = TrialOutcome("confirmed", trial.be)
        finally:
            notes = _disarmed(disarm)
            if outcome is None:  # an error follows: the notes go to the log
                for note in notes:
                    log.warning("%s", note)
        assert outcome is not None
        return replace(outcome, why=outcome.why + tuple(notes))

    @staticmethod
    def _run_checks(checks: Callable[[], list[str]]) -> tuple[str, ...]:
        """The health checks' failures; checks that cannot run count as a failure (the
        trial then ends as a failed one instead of waiting for its watchdog)."""
        try:
            return tuple(checks())
        except (BeadmError, OSError) as exc:
            return (f"the health checks could not run: {exc}",)

    def init(self, name: str | None = None) -> BeRef:
        """Adopt an existing dataset under the BE root as a BE (backend writes its entries)."""
        with self._changing(boot=True) as tree:
            running = self.running_name()
            if name is None:
                if running is None:
                    raise UsageError(f"no running BE under {self.root}; name the BE to adopt")
                name = running
            check_new_be_name(name)  # its entries become files on the ESPs
            be = self._need(tree, name)
            ref = self._ref(be, running)
            self.backend.init(ref)
            return ref

    def sync(self, *, only_if_used: bool = False) -> None:
        with self._changing(boot=not only_if_used) as tree:
            running = self.running_name()
            self.backend.sync([self._ref(b, running) for b in _bootable(tree)],
                              only_if_used=only_if_used)

    def migrate(self) -> None:
        with self._changing(boot=True) as tree:
            running = self.running_name()
            self.backend.migrate([self._ref(b, running) for b in tree.bes()])

    # -- mount / umount ----------------------------------------------------------------------

    def mount(self, name: str, directory: str | None = None) -> str:
        """Mount a BE and its children at ``directory`` (a fresh private one if None)."""
        check_be_name(name)
        with self._changing() as tree:
            be = self._need(tree, name)
            if name == self.running_name():
                raise RefusedError(f"BE {name} is the running BE, mounted at /")
            where = mnt.zfs_mounts(self.mounts())
            if be.dataset in where:
                raise RefusedError(f"BE {name} is already mounted at {where[be.dataset][-1]}")
            made_dir = False
            if directory is None:
                import tempfile

                if self.runner.dry_run:
                    directory = str(Path(tempfile.gettempdir()) / "beadm-XXXXXXXX")
                else:
                    directory = tempfile.mkdtemp(prefix="beadm-")
                    made_dir = True
            else:
                path = Path(directory)
                if not path.is_dir():
                    raise NotFoundError(f"directory {directory} does not exist")
                directory = str(path.resolve())
                if any(m.mountpoint == directory for m in self.mounts()):
                    raise RefusedError(
                        f"{directory} is a mount point: mounting {name} there would hide it"
                    )
                if any(path.iterdir()):
                    raise RefusedError(
                        f"{directory} is not empty: mounting {name} there would hide "
                        "what it holds; use an empty directory"
                    )
            done: list[str] = []
            try:
                for d, rel in _mount_plan(be):
                    target = directory + rel if rel else directory
                    if rel and not self.runner.dry_run:  # never through a link in the BE
                        confined.mount_point(Path(directory), rel, create=True)
                    self.zfs.mount_at(d.name, target)
                    done.append(target)
            except BaseException:
                for target in reversed(done):
                    self.runner.run(["umount", target], check=False)
                if made_dir:
                    _rmdir(directory)
                raise
            return directory

    def umount(self, target: str, *, force: bool = False) -> None:
        """Unmount a BE (named, or by the directory it is mounted at), children first."""
        with self._changing() as tree:
            if "/" in target:
                path = str(Path(target).resolve())
                owner = [
                    m.source for m in self.mounts() if m.fstype == "zfs" and m.mountpoint == path
                ]
                names = [n for n in tree.be_names() if tree.be_dataset(n) in owner]
                if not names:
                    raise NotFoundError(f"no BE is mounted at {path}")
                be = tree.be(names[-1])
            else:
                check_be_name(target)
                be = self._need(tree, target)
            if be.name == self.running_name():
                raise RefusedError(f"BE {be.name} is the running BE")
            if not self._unmount_be(be, force=force):
                raise NotFoundError(f"BE {be.name} is not mounted")

    def _unmount_be(self, be: BootEnv, *, force: bool) -> bool:
        """Unmount every mount of the BE's datasets, deepest first. False if none."""
        inside = {d.name for d in be.datasets}
        points = [m.mountpoint for m in self.mounts() if m.fstype == "zfs" and m.source in inside]
        if not points:
            return False
        if "/" in points:
            raise RefusedError(f"BE {be.name} is mounted at /")
        top = [m.mountpoint for m in self.mounts() if m.fstype == "zfs" and m.source == be.dataset]
        for p in sorted(points, key=lambda p: (p.count("/"), p), reverse=True):
            self.runner.run(["umount", "-f", p] if force else ["umount", p])
        import tempfile

        for p in top:
            parent = Path(p).parent
            ours = Path(p).name.startswith("beadm-") and str(parent) == tempfile.gettempdir()
            if ours and not self.runner.dry_run:
                _rmdir(p)
        return True


def _same_trial(now: PendingTrial | None, then: PendingTrial) -> bool:
    """Whether the pending trial ``now`` is still the trial ``then`` (same BE and entry)."""
    return now is not None and (now.be, now.base) == (then.be, then.base)


def _disarmed(disarm: Callable[[], list[str]] | None) -> list[str]:
    """Stop the trial's watchdog (``disarm``); its notes, also when it fails."""
    if disarm is None:
        return []
    try:
        return disarm()
    except OSError as exc:
        return [f"the trial's watchdog could not be stopped ({exc}): the machine resets when "
                "it expires"]


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


def _clone_props(
    src: Dataset,
    local: list[PropValue],
    *,
    description: str,
    user: list[tuple[str, str]],
    altroot: str = "",
) -> list[tuple[str, str]]:
    """Properties for the clone of ``src``: local/received ones copied, then beadm's own."""
    props: dict[str, str] = {}
    for pv in local:
        if pv.prop not in _NOT_COPIED and not pv.prop.startswith("org.beadm:"):
            props[pv.prop] = pv.value
    mp = props.get("mountpoint", "")
    root = altroot.rstrip("/")
    if root and (mp == root or mp.startswith(root + "/")):
        props["mountpoint"] = mp[len(root) :] or "/"
    props["canmount"] = "off" if src.canmount == "off" else "noauto"
    props[PROP_STATE] = STATE_CREATING
    if description:
        props[PROP_DESCRIPTION] = description
    for k, v in user:
        props[k] = v
    return list(props.items())


def _unprintable(text: str) -> bool:
    """True if ``text`` holds a character that is not printable: control characters
    (``\t``, ``\n``, ``\x0b``, ``\x1c``, ``\x85``, ...), line and paragraph separators
    (U+2028/9), undecodable bytes (lone surrogates from a non-UTF-8 argument)."""
    return not text.isprintable()


def _parse_props(props: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for p in props:
        key, sep, value = p.partition("=")
        if not sep or not key or any(c in key for c in " =@/") or _unprintable(key):
            raise UsageError(f"invalid -o {p!r}: expected property=value")
        if key in _OWNED_PROPS or key.startswith("org.beadm:"):
            raise UsageError(f"property {key} is beadm's own and cannot be set with -o")
        if _unprintable(value):
            raise UsageError(f"invalid -o {key}: value contains a control character")
        out.append((key, value))
    return out


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


__all__ = ["AutoSnapshot", "BeInfo", "BeManager", "Listing", "Pruned", "check_component"]
