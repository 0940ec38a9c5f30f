"""Proxmox state that must not go back in time with a BE: detect it, move it out of the BE.

On a Proxmox VE host the root dataset holds more than the OS: ``/var/lib/pve-cluster``
(``config.db``, the backing store of ``/etc/pve``: every guest's configuration), and on
installs older than 8.1.5 ``/var/lib/vz`` (ISOs, templates, vzdump backups). Booting an
older BE would take them back in time. :data:`SHARED` lists the paths beadm shares between
all BEs, each in its own dataset outside the BE root, named like the installer's own
``rpool/var-lib-vz`` (see beadm(8), SHARED STATE).

:func:`detect` is a pure function over the pool's dataset list and the mount table.
:class:`Mover` moves one path at a time, in an order where a kill at any step loses
nothing: the data stays in the BE until a complete, synced and verified copy exists in a
new dataset that no boot mounts yet (``canmount=noauto``, ``org.beadm:state=moving``);
then the new dataset is switched on (``canmount=on``), mounted over the path, and only
then is the old copy removed from the BE. What would lose a write is refused before
anything changes: a path through a symbolic link, a mount below a path, a file under a
path in use (a running guest's disk, a container's root); a file that changes during the
copy anyway rejects it (beadm.statecopy). A re-run after a kill destroys a dataset that
was never switched on (the source is intact) and redoes it, or finishes one that was.

:func:`prepare_be` gives one BE the drop-ins of the shared datasets in service
(:func:`in_use`): ``create`` and ``activate`` call it for a BE cloned from a snapshot taken
before the move. Copying and verifying live state is :mod:`beadm.statecopy`.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

from beadm import confined
from beadm import mounts as mnt
from beadm.errors import BeadmError, RefusedError
from beadm.record import record
from beadm.runner import Runner
from beadm.zfs import PROP_STATE, Dataset, Zfs

log = logging.getLogger(__name__)

STATE_MOVING = "moving"  # created .. mounted at its path: the BE's copy is complete
STATE_REMOVING = "removing"  # mounted at its path, the BE's copy may be partly gone
#: Units stopped for the move and started again afterwards (on the new dataset).
PROP_RESTART = "org.beadm:restart"
DROPIN_NAME = "beadm-shared-state.conf"
#: Where the running BE is mounted (tests point it elsewhere).
ROOT_DIR = "/"


@record
class SharedPath:
    """One path shared by every BE: what writes it (stopped while it moves), which units
    must not start before its dataset is mounted, and whether it holds SQLite files."""

    path: str
    stop: tuple[str, ...] = ()
    needed_by: tuple[str, ...] = ()
    sqlite: bool = False


#: What beadm shares, in the order it moves them. Reasons: beadm(8), SHARED STATE.
SHARED: tuple[SharedPath, ...] = (
    # The big, slow ones first, so that pve-cluster is stopped for seconds only.
    SharedPath("/var/lib/vz", stop=("pvescheduler.service",)),
    SharedPath("/var/lib/pve-manager", stop=("pvescheduler.service",)),
    SharedPath(
        "/var/lib/pve-cluster",
        stop=("pve-cluster.service",),
        needed_by=("pve-cluster.service",),
        sqlite=True,
    ),
    SharedPath(
        "/etc/corosync",
        stop=("pve-cluster.service",),  # pmxcfs is what writes corosync.conf
        needed_by=("corosync.service", "pve-cluster.service"),
    ),
)

#: Kinds of :class:`Finding`.
INSIDE = "inside"  # in the BE's root dataset: to be moved
SHARED_OK = "shared"  # served by a dataset outside the BE root already
PENDING = "pending"  # a move was interrupted: the next --shared-state finishes it
ABSENT = "absent"  # the path does not exist in the BE: nothing to move
CHILD = "child"  # in a child dataset of the BE: beadm does not move it
CONFLICT = "conflict"  # the shared dataset exists but does not serve the path
LINK = "link"  # a component of the path is a symbolic link: beadm does not move it
OTHER = "other"  # not on ZFS at all


def dataset_for(pool: str, path: str) -> str:
    """The shared dataset of ``path``: the installer's naming, ``/var/lib/vz`` ->
    ``rpool/var-lib-vz``."""
    return f"{pool}/{path.strip('/').replace('/', '-')}"


def _join(root_dir: str, path: str) -> str:
    return root_dir.rstrip("/") + path if root_dir != "/" else path


def _in_be(source: str, be_dataset: str) -> bool:
    return source == be_dataset or source.startswith(be_dataset + "/")


def serving_mount(mounts: Sequence[mnt.Mount], path: str) -> mnt.Mount | None:
    """The mount that ``path`` is on: the longest mountpoint at or above it (last wins)."""
    best: mnt.Mount | None = None
    for m in mounts:
        mp = m.mountpoint.rstrip("/") or "/"
        above = path == mp or path.startswith(mp.rstrip("/") + "/") or mp == "/"
        if above and (best is None or len(mp) >= len(best.mountpoint.rstrip("/") or "/")):
            best = m
    return best


def symlink_in(root_dir: str, path: str,
               lstat: Callable[[str], os.stat_result] = os.lstat) -> str | None:
    """The first component of ``path`` (``/var``, ``/var/lib``, ``/var/lib/vz``) that is a
    symbolic link under ``root_dir``, None if none is (a missing component ends the look)."""
    done = ""
    for part in [c for c in path.split("/") if c]:
        done += "/" + part
        try:
            st = lstat(_join(root_dir, done))
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return done
    return None


@record
class Finding:
    """Where one shared path lives now."""

    path: str
    kind: str
    dataset: str  # the shared dataset it has or would get
    source: str  # the dataset (or device) serving the path now, "" if none
    source_mount: str  # where that is mounted (as in mountinfo)
    link: str = ""  # LINK: the component that is a symbolic link

    @property
    def to_move(self) -> bool:
        return self.kind in (INSIDE, PENDING)


def detect(
    datasets: Sequence[Dataset],
    mounts: Sequence[mnt.Mount],
    *,
    pool: str,
    be_dataset: str,
    root_dir: str = "/",
    present: Container[str],
    shared: Sequence[SharedPath] = SHARED,
    links: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Which of ``shared`` live inside the BE ``be_dataset`` mounted at ``root_dir``.

    ``datasets`` is the pool's filesystem list, ``mounts`` the mount table, ``present`` the
    paths (as in ``shared``) that exist in the running system, ``links`` the paths that go
    through a symbolic link (-> that component; see :func:`symlink_in`): mount points are
    compared as strings, and ``zfs mount`` would follow the link. Pure: no I/O."""
    links = links or {}
    by_name = {d.name: d for d in datasets}
    out: list[Finding] = []
    for sp in shared:
        target = dataset_for(pool, sp.path)
        ds = by_name.get(target)
        m = serving_mount(mounts, _join(root_dir, sp.path))
        source = m.source if m is not None else ""
        where = m.mountpoint if m is not None else ""
        if sp.path in links:
            kind = LINK
        elif ds is not None and ds.state in (STATE_MOVING, STATE_REMOVING):
            kind = PENDING
        elif m is None or m.fstype != "zfs":
            kind = OTHER
        elif not _in_be(source, be_dataset):
            kind = SHARED_OK
        elif ds is not None:
            kind = CONFLICT
        elif sp.path not in present:
            kind = ABSENT
        elif source != be_dataset:
            kind = CHILD
        else:
            kind = INSIDE
        out.append(Finding(sp.path, kind, target, source, where, links.get(sp.path, "")))
    return out


def describe(f: Finding) -> str:
    """One line about a finding, for ``init`` and errors."""
    if f.kind == INSIDE:
        return f"{f.path} is inside the BE ({f.source}); it would move to {f.dataset}"
    if f.kind == PENDING:
        return f"{f.path}: an interrupted move to {f.dataset} is to be finished"
    if f.kind == SHARED_OK:
        return f"{f.path} is shared ({f.source})"
    if f.kind == ABSENT:
        return f"{f.path} does not exist; nothing to move"
    if f.kind == CHILD:
        return (f"{f.path} is in the BE's child dataset {f.source}; beadm does not move it "
                f"(zfs rename it out of the BE root by hand)")
    if f.kind == LINK:
        return (f"{f.path}: {f.link} is a symbolic link; beadm does not move a path through "
                f"a link (replace the link by the directory it points to, or leave it)")
    if f.kind == CONFLICT:
        return f"{f.dataset} exists but is not mounted at {f.path}; mount or rename it first"
    return f"{f.path} is not on ZFS; left alone"


def dropin_text(paths: Sequence[str]) -> str:
    """The systemd drop-in that keeps a unit from starting on an empty directory."""
    lines = [
        "# Written by beadm: these paths are datasets shared by every boot environment",
        "# (see beadm(8), SHARED STATE). Do not start before they are mounted.",
        "[Unit]",
        "After=zfs-mount.service",
    ]
    lines += [f"RequiresMountsFor={p}" for p in paths]
    lines += [f"AssertPathIsMountPoint={p}" for p in paths]
    return "\n".join(lines) + "\n"


def dropins(moved: Container[str], shared: Sequence[SharedPath] = SHARED) -> dict[str, str]:
    """Unit -> drop-in text, for the units that need a shared path that has been moved."""
    need: dict[str, list[str]] = {}
    for sp in shared:
        if sp.path in moved:
            for unit in sp.needed_by:
                need.setdefault(unit, []).append(sp.path)
    return {u: dropin_text(ps) for u, ps in sorted(need.items())}


def in_use(datasets: Sequence[Dataset], pool: str, *, altroot: str = "",
           shared: Sequence[SharedPath] = SHARED) -> list[str]:
    """The shared paths whose dataset is in service: it exists with ``canmount=on`` and the
    path as its mountpoint, and no move of it is under way (no ``org.beadm:state``)."""
    by_name = {d.name: d for d in datasets}
    root = altroot.rstrip("/")
    out: list[str] = []
    for sp in shared:
        d = by_name.get(dataset_for(pool, sp.path))
        if d is not None and d.canmount == "on" and not d.state \
                and d.mountpoint in (sp.path, root + sp.path):
            out.append(sp.path)
    return out


def write_units(root: Path, units: dict[str, str], *, dry_run: bool, out: TextIO) -> list[Path]:
    """Write each unit's drop-in under the BE mounted at ``root`` where it is missing or
    differs; each file appears whole or not at all (a temporary file renamed over it).
    Returns the drop-ins written (with ``dry_run``: that would be). Inside the BE only
    (:mod:`beadm.confined`: a link where it writes is refused, never followed)."""
    written: list[Path] = []
    for unit, text in units.items():
        rel = f"etc/systemd/system/{unit}.d/{DROPIN_NAME}"
        path = root / rel
        with suppress(OSError):
            if confined.read_text(root, rel, errors="replace") == text:
                continue
        written.append(path)
        if dry_run:
            print(f"would write {path}", file=out)
            continue
        confined.write_file(root, rel, text.encode("utf-8"), fsync=False)
    return written


def own_copies(root: Path, paths: Sequence[str]) -> list[str]:
    """The shared ``paths`` of which the BE root mounted (alone) at ``root`` keeps files of its
    own: hidden under the shared dataset at boot, never used (a BE cloned from a snapshot
    taken before the move)."""
    found: list[str] = []
    for path in paths:
        with suppress(OSError):  # read inside the BE only (beadm.confined)
            if confined.readlink(root, path) is None and confined.is_dir(root, path) \
                    and confined.listdir(root, path):
                found.append(path)
    return found


@record
class BeState:
    """What :func:`prepare_be` did to one BE."""

    written: tuple[Path, ...]  # drop-ins written (in a dry run: that would be)
    hidden: tuple[str, ...]  # shared paths of which the BE keeps an unused copy of its own


def prepare_be(
    runner: Runner,
    be_dataset: str,
    paths: Sequence[str],
    *,
    mountinfo: Path = mnt.MOUNTINFO,
    root_dir: str | None = None,
    tmpdir: str | None = None,
    out: TextIO | None = None,
    shared: Sequence[SharedPath] = SHARED,
    view: Callable[[bool], Path | None] | None = None,
) -> BeState:
    """Give the BE ``be_dataset`` the drop-ins that the shared ``paths`` (see :func:`in_use`)
    need, where it lacks them, and find its own copies of those paths.

    A BE cloned from a snapshot taken before ``init --shared-state`` has neither the
    drop-ins nor an empty directory under the shared mounts. The BE is looked at where it
    is mounted (the running one at ``root_dir``), else through a temporary mount of its
    root dataset alone (read-only in a dry run, which writes nothing): the one ``view``
    gives (``view(writable)``: the backend's session mounts it for the same command), if
    any, else a mount of its own."""
    units = dropins(paths, shared)
    if not units:
        return BeState((), ())
    dry = runner.dry_run
    say = out if out is not None else sys.stdout
    where = mnt.zfs_mounts(mnt.read_mounts(mountinfo)).get(be_dataset)
    if where:
        top = where[-1]
        if top == "/":
            root = Path(root_dir if root_dir is not None else ROOT_DIR)
            return BeState(tuple(write_units(root, units, dry_run=dry, out=say)), ())
        written = write_units(Path(top), units, dry_run=dry, out=say)
        return BeState(tuple(written), tuple(own_copies(Path(top), paths)))
    got = view(not dry) if view is not None else None
    if got is not None:
        written = write_units(got, units, dry_run=dry, out=say)
        return BeState(tuple(written), tuple(own_copies(got, paths)))
    tmp = tempfile.mkdtemp(prefix="beadm-", dir=tmpdir)
    try:
        Zfs(runner).mount_at(be_dataset, tmp, ro=dry, readonly=dry)
        try:
            written = write_units(Path(tmp), units, dry_run=dry, out=say)
            hidden = own_copies(Path(tmp), paths)
        finally:
            runner.run(["umount", tmp], readonly=dry)
    finally:
        with suppress(OSError):
            Path(tmp).rmdir()
    return BeState(tuple(written), tuple(hidden))


def parse_show(text: str) -> dict[str, str]:
    """``systemctl show -p A -p B UNIT`` output (``Key=Value`` lines) as a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


# -- the move --------------------------------------------------------------------------------


class Mover:
    """Moves shared paths out of the BE ``be_dataset`` mounted at ``root_dir``.

    ``step`` is called with a short name before each step (tests kill the move there).
    ``proc`` and ``sys_block`` are where :func:`beadm.statecopy.holders` looks for what uses
    a file under a path, ``unit_of`` names the systemd unit of a process (from its cgroup),
    ``lstat`` is :func:`os.lstat` (tests show their stand-in mounts as directories).
    The caller holds beadm's lock."""

    def __init__(
        self,
        runner: Runner,
        *,
        pool: str,
        be_root: str,
        be_dataset: str,
        root_dir: str | None = None,
        mountinfo: Path = mnt.MOUNTINFO,
        out: TextIO | None = None,
        step: Callable[[str], None] | None = None,
        shared: Sequence[SharedPath] = SHARED,
        tmpdir: str | None = None,
        proc: Path = Path("/proc"),
        sys_block: Path = Path("/sys/block"),
        unit_of: Callable[[int], str] | None = None,
        lstat: Callable[[str], os.stat_result] = os.lstat,
    ) -> None:
        self.runner = runner
        self.zfs = Zfs(runner)
        self.pool = pool
        self.be_root = be_root
        self.be_dataset = be_dataset
        self.root_dir = root_dir if root_dir is not None else ROOT_DIR
        self.mountinfo = mountinfo
        self.out = out if out is not None else sys.stdout
        self._step = step if step is not None else (lambda name: None)
        self.shared = tuple(shared)
        self.tmpdir = tmpdir if tmpdir is not None else tempfile.gettempdir()
        self._restart: list[str] = []  # units stopped by this or an interrupted move
        self.proc = proc
        self.sys_block = sys_block
        self.unit_of = unit_of if unit_of is not None else self._cgroup_unit
        self.lstat = lstat

    @property
    def dry_run(self) -> bool:
        return self.runner.dry_run

    def _say(self, text: str) -> None:
        print(f"would {text}", file=self.out)

    def live(self, path: str) -> Path:
        return Path(_join(self.root_dir, path))

    def datasets(self) -> list[Dataset]:
        return self.zfs.list_tree(self.pool, snapshots=False)

    def findings(self) -> list[Finding]:
        links = {sp.path: link for sp in self.shared
                 if (link := symlink_in(self.root_dir, sp.path, self.lstat)) is not None}
        present = {sp.path for sp in self.shared if self.live(sp.path).exists()}
        return detect(self.datasets(), mnt.read_mounts(self.mountinfo), pool=self.pool,
                      be_dataset=self.be_dataset, root_dir=self.root_dir, present=present,
                      shared=self.shared, links=links)

    def move_all(self) -> list[Finding]:
        """Move every path that is inside the BE (or finish an interrupted move).

        Returns the findings before the move. A path beadm cannot move (a child dataset of
        the BE, a dataset in the way) is refused before anything changes."""
        found = self.findings()
        bad = [f for f in found if f.kind in (CHILD, CONFLICT, LINK)]
        if bad:
            raise RefusedError("; ".join(describe(f) for f in bad))
        self._refuse_in_use([f for f in found if f.to_move and not self._in_service(f)])
        try:
            for f in found:
                if f.to_move:
                    spec = next(sp for sp in self.shared if sp.path == f.path)
                    self.move(spec, f)
            moved = {f.path for f in found if f.to_move or f.kind == SHARED_OK}
            if any(f.to_move for f in found):
                self._step("drop-ins")
                self.write_dropins(moved)
                self._finish_services(found)
        except (Exception, KeyboardInterrupt):
            # The marks stay for the next run; what was stopped runs again meanwhile.
            restart_after_failure(self.runner, self._restart)
            raise
        return found

    # what would lose a write ------------------------------------------------------------

    def _in_service(self, f: Finding) -> bool:
        """The dataset of ``f`` is what the system uses (a move to finish, not to redo)."""
        d = {d.name: d for d in self.datasets()}.get(f.dataset)
        live = _join(self.root_dir, f.path)
        return d is not None and (d.state == STATE_REMOVING or (d.canmount == "on" and any(
            m.fstype == "zfs" and m.source == f.dataset and m.mountpoint == live
            for m in mnt.read_mounts(self.mountinfo))))

    def _cgroup_unit(self, pid: int) -> str:
        """The systemd unit of process ``pid``: the last component of its cgroup path."""
        try:
            text = (self.proc / str(pid) / "cgroup").read_text(encoding="utf-8")
        except OSError:
            return ""
        for line in text.splitlines():
            unit = line.rpartition("/")[2]
            if unit.endswith((".service", ".scope")):
                return unit
        return ""

    def _refuse_in_use(self, found: Sequence[Finding], *, stopped: bool = False) -> None:
        """Refuse the paths of ``found`` that have a mount below them or a file in use: the
        copy would miss what is written after it, and the BE's copy, unlinked, would go on
        taking the writes of whoever has it open. Before the move (not ``stopped``) the
        processes of the units the move stops do not count."""
        if not found:
            return
        from beadm.statecopy import holders  # the move only (see _copy_phase)

        paths = [f.path for f in found]
        for f in found:
            live = _join(self.root_dir, f.path)
            below = [m.mountpoint for m in mnt.read_mounts(self.mountinfo)
                     if m.mountpoint.startswith(live + "/")]
            if below:
                raise RefusedError(f"{f.path} has file systems mounted below it "
                                   f"({', '.join(below[:3])}); unmount them first "
                                   "(nothing was changed)")
        stopping: set[str] = set()
        if not stopped:
            for sp in self.shared:
                if sp.path in paths:
                    stopping.update(self._to_stop(sp))
        held = holders(self.root_dir, paths, self.be_dataset, proc=self.proc,
                       sys_block=self.sys_block,
                       skip=lambda pid: bool(stopping) and self.unit_of(pid) in stopping)
        if not held:
            return
        for f in found:
            top = _join(self.root_dir, f.path)
            mine = [h for h in held if h.path == f.path or h.path == top
                    or h.path.startswith((top + "/", f.path + "/"))]
            if mine:
                after = "the original is left in place" if stopped else "nothing was changed"
                more = f" and {len(mine) - 3} more" if len(mine) > 3 else ""
                raise RefusedError(
                    f"{f.path} is in use: {', '.join(str(h) for h in mine[:3])}{more}; stop "
                    "or migrate what uses it (guests with disks or root file systems on the "
                    "local storage: shut them down or move their volumes to another "
                    f"storage) and run again ({after})")

    # one path ---------------------------------------------------------------------------

    def _active_services(self) -> set[str]:
        argv = ["systemctl", "list-units", "--type=service", "--state=active", "--plain",
                "--no-legend", "--no-pager"]
        res = self.runner.run(argv, readonly=True, check=False)
        if res.returncode != 0:  # not booted with systemd (a rescue system): nothing runs
            log.info("no service manager: %s", res.stderr.strip())
            return set()
        return {line.split()[0] for line in res.stdout.splitlines() if line.split()}

    def _to_stop(self, spec: SharedPath) -> list[str]:
        """The active units among ``spec.stop`` and the units that require them (systemd
        stops those too), to be started again after the move."""
        if not spec.stop:
            return []
        active = self._active_services()
        units: list[str] = []
        for unit in spec.stop:
            if unit not in active:
                continue
            units.append(unit)
            argv = ["systemctl", "show", "-p", "RequiredBy", "-p", "BoundBy", unit]
            info = parse_show(self.runner.run(argv, readonly=True).stdout)
            deps = info.get("RequiredBy", "").split() + info.get("BoundBy", "").split()
            units += sorted(u for u in set(deps) if u in active and u not in units)
        return units

    def move(self, spec: SharedPath, f: Finding) -> None:
        ds = f.dataset
        existing = {d.name: d for d in self.datasets()}.get(ds)
        if existing is not None:
            for u in self.zfs.get(ds, PROP_RESTART).split(","):
                if u and u not in self._restart:
                    self._restart.append(u)
        live = _join(self.root_dir, spec.path)
        mounted_live = any(m.fstype == "zfs" and m.source == ds and m.mountpoint == live
                           for m in mnt.read_mounts(self.mountinfo))
        if existing is not None and (existing.state == STATE_REMOVING
                                     or (existing.canmount == "on" and mounted_live)):
            # The dataset is (or was) what the system uses: never destroyed, finished.
            log.info("finishing the interrupted move of %s", spec.path)
        else:
            if existing is not None:
                # Not yet in use: the BE still holds all of it (and may have changed since
                # the copy, if someone started the services by hand): copy again.
                log.warning("redoing the interrupted move of %s", spec.path)
                self._unmount_all(ds)
                self._step(f"destroy-partial {spec.path}")
                self.zfs.destroy(ds)
            self._copy_phase(spec, f)
        self._switch_phase(spec, f)

    def _copy_phase(self, spec: SharedPath, f: Finding) -> None:
        # the move only (sqlite3 is not imported by the commands that never move)
        from beadm.statecopy import (
            SQLITE_SIDE,
            allocated,
            snapshot,
            sqlite_copy,
            sqlite_files,
            verify_copy,
        )

        ds = f.dataset
        src = self.live(spec.path)
        need = allocated(src)
        avail = int(self.zfs.get(self.pool, "available") or 0)
        if need > avail:
            raise RefusedError(f"{spec.path} needs {need} bytes, pool {self.pool} has {avail} "
                               "available; free space first (nothing was changed for it)")
        stop = self._to_stop(spec)
        restart = self._restart + [u for u in stop if u not in self._restart]
        props = [("canmount", "noauto"), ("mountpoint", spec.path), (PROP_STATE, STATE_MOVING)]
        if restart:
            props.append((PROP_RESTART, ",".join(restart)))
        self._step(f"create {spec.path}")
        self.zfs.create(ds, props)
        if stop:
            self._step(f"stop {spec.path}")
            self._restart = restart
            self.runner.run(["systemctl", "stop", *stop])
        self._step(f"mount-copy {spec.path}")
        with self._mounted(ds, spec.path) as tmp:
            self._step(f"copy {spec.path}")
            dbs = sqlite_files(src) if spec.sqlite else []
            if not self.dry_run:  # what was running before the stop may still run
                self._refuse_in_use([f], stopped=True)
                skip = {db.name + s for db in dbs for s in ("", *SQLITE_SIDE)}
                before = snapshot(src, skip)
            self.runner.run(["cp", "-a", "--", f"{src}/.", f"{tmp}/"])
            for db in dbs:
                self._step(f"sqlite {spec.path}")
                if self.dry_run:
                    self._say(f"copy {db} with the SQLite backup API")
                else:
                    sqlite_copy(db, Path(tmp) / db.name)
            self._step(f"sync {spec.path}")
            self.runner.run(["sync", "-f", tmp])
            self._step(f"verify {spec.path}")
            if not self.dry_run:
                verify_copy(src, Path(tmp), [db.name for db in dbs], before=before)
        self._step(f"switch {spec.path}")
        self.zfs.set(ds, "canmount", "on")

    def _switch_phase(self, spec: SharedPath, f: Finding) -> None:
        ds = f.dataset
        live = _join(self.root_dir, spec.path)
        where = [m.mountpoint for m in mnt.read_mounts(self.mountinfo)
                 if m.fstype == "zfs" and m.source == ds]
        for p in where:
            if p != live:
                self.runner.run(["umount", p])
        if live not in where:
            self._step(f"mount {spec.path}")
            self.zfs.mount(ds)
        self._step(f"mark-removing {spec.path}")
        self.zfs.set(ds, PROP_STATE, STATE_REMOVING)
        self._step(f"remove-old {spec.path}")
        self._remove_old_copy(spec)

    def _remove_old_copy(self, spec: SharedPath) -> None:
        """Empty the BE's own directory under the new mount, seen through a (non-recursive)
        bind mount of the BE's root: only paths in the BE's root dataset are moved. No link
        is followed and no other file system entered (beadm.statecopy.empty_under)."""
        from beadm.statecopy import empty_under

        tmp = self._tmp()
        self.runner.run(["mount", "--bind", self.root_dir, tmp])
        try:
            if self.dry_run:
                self._say(f"remove the old copy of {spec.path} from {self.be_dataset}")
            else:
                empty_under(Path(tmp), spec.path)
        finally:
            self.runner.run(["umount", tmp])
            self._rmtmp(tmp)

    def _finish_services(self, found: Sequence[Finding]) -> None:
        if self._restart:
            self._step("start")
            self.runner.run(["systemctl", "daemon-reload"])
            self.runner.run(["systemctl", "start", *self._restart])
            self._restart = []
        self._step("done")
        for f in found:
            if f.to_move:
                self.zfs.inherit(f.dataset, PROP_RESTART)
                self.zfs.inherit(f.dataset, PROP_STATE)

    # drop-ins ---------------------------------------------------------------------------

    def write_dropins(self, moved: Container[str]) -> None:
        """Write the drop-ins into the running BE and every other BE under the BE root."""
        units = dropins(moved, self.shared)
        if not units:
            return
        self._write_units(Path(self.root_dir), units)
        mounts = mnt.read_mounts(self.mountinfo)
        where = mnt.zfs_mounts(mounts)
        for d in self.zfs.list_tree(self.be_root, snapshots=False):
            if d.name.count("/") != self.be_root.count("/") + 1 or d.name == self.be_dataset:
                continue
            if d.state:  # being created or half-created: not a BE yet
                continue
            if d.name in where:
                self._write_units(Path(where[d.name][-1]), units)
                continue
            tmp = self._tmp()
            self.zfs.mount_at(d.name, tmp)
            try:
                self._write_units(Path(tmp), units)
            finally:
                self.runner.run(["umount", tmp])
                self._rmtmp(tmp)

    def _write_units(self, root: Path, units: dict[str, str]) -> None:
        write_units(root, units, dry_run=self.dry_run, out=self.out)

    # mounts -----------------------------------------------------------------------------

    def _tmp(self) -> str:
        if self.dry_run:
            return str(Path(self.tmpdir) / "beadm-XXXXXXXX")
        return tempfile.mkdtemp(prefix="beadm-", dir=self.tmpdir)

    def _rmtmp(self, path: str) -> None:
        if not self.dry_run:
            with suppress(OSError):
                Path(path).rmdir()

    @contextmanager
    def _mounted(self, ds: str, path: str) -> Iterator[str]:
        tmp = self._tmp()
        self.zfs.mount_at(ds, tmp)
        try:
            yield tmp
        finally:
            self._step(f"umount-copy {path}")
            self.runner.run(["umount", tmp])
            self._rmtmp(tmp)

    def _unmount_all(self, ds: str) -> None:
        for m in reversed(mnt.read_mounts(self.mountinfo)):
            if m.fstype == "zfs" and m.source == ds:
                self.runner.run(["umount", m.mountpoint])


def restart_after_failure(runner: Runner, units: Sequence[str]) -> None:
    """Best effort: start again what a failed move stopped."""
    if units:
        try:
            runner.run(["systemctl", "start", *units])
        except BeadmError as exc:
            log.warning("could not start %s again: %s", " ".join(units), exc)
