"""Moving shared Proxmox state (beadm.pvestate) out of the BE: the kill-safe transaction.

:class:`Mover` moves one path at a time, in an order where a kill at any step loses
nothing: the data stays in the BE until a complete, synced and verified copy exists in a
new dataset that no boot mounts yet (``canmount=noauto``, ``org.beadm:state=moving``);
then the new dataset is switched on (``canmount=on``), mounted over the path, and only
then is the old copy removed from the BE. What would lose a write is refused before
anything changes: a path through a symbolic link, a mount below a path, a file under a
path in use (a running guest's disk, a container's root); a file that changes during the
copy anyway rejects it (beadm.statecopy). The services that write a path are stopped for
its copy and started again afterwards (beadm.stateservices). A re-run after a kill
destroys a dataset that was never switched on (the source is intact) and redoes it, or
finishes one that was. At the end every BE gets the drop-ins (beadm.statedropins).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

from beadm import mounts as mnt
from beadm import pvestate
from beadm.errors import RefusedError
from beadm.pvestate import (
    CHILD,
    CONFLICT,
    LINK,
    SHARED,
    SHARED_OK,
    STATE_MOVING,
    STATE_REMOVING,
    Finding,
    SharedPath,
    describe,
    detect,
    symlink_in,
    under_root,
)
from beadm.runner import Runner
from beadm.statedropins import dropins, write_units
from beadm.stateservices import cgroup_unit, restart_after_failure, units_to_stop
from beadm.zfs import PROP_STATE, Dataset, Zfs

log = logging.getLogger("beadm.pvestate")  # the feature's one logger
_progress = logging.getLogger("beadm.progress")  # long steps, shown on a terminal (beadm.cli)

#: Units stopped for the move and started again afterwards (on the new dataset).
PROP_RESTART = "org.beadm:restart"


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
        self.root_dir = root_dir if root_dir is not None else pvestate.ROOT_DIR
        self.mountinfo = mountinfo
        self.out = out if out is not None else sys.stdout
        self._step = step if step is not None else (lambda name: None)
        self.shared = tuple(shared)
        self.tmpdir = tmpdir if tmpdir is not None else tempfile.gettempdir()
        self._restart: list[str] = []  # units stopped by this or an interrupted move
        self.proc = proc
        self.sys_block = sys_block
        self.unit_of = unit_of if unit_of is not None else (
            lambda pid: cgroup_unit(self.proc, pid))
        self.lstat = lstat

    @property
    def dry_run(self) -> bool:
        return self.runner.dry_run

    def _say(self, text: str) -> None:
        print(f"would {text}", file=self.out)

    def live(self, path: str) -> Path:
        return Path(under_root(self.root_dir, path))

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
        live = under_root(self.root_dir, f.path)
        return d is not None and (d.state == STATE_REMOVING or (d.canmount == "on" and any(
            m.fstype == "zfs" and m.source == f.dataset and m.mountpoint == live
            for m in mnt.read_mounts(self.mountinfo))))

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
            live = under_root(self.root_dir, f.path)
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
                    stopping.update(units_to_stop(self.runner, sp.stop))
        held = holders(self.root_dir, paths, self.be_dataset, proc=self.proc,
                       sys_block=self.sys_block,
                       skip=lambda pid: bool(stopping) and self.unit_of(pid) in stopping)
        if not held:
            return
        for f in found:
            top = under_root(self.root_dir, f.path)
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

    def move(self, spec: SharedPath, f: Finding) -> None:
        ds = f.dataset
        existing = {d.name: d for d in self.datasets()}.get(ds)
        if existing is not None:
            for u in self.zfs.get(ds, PROP_RESTART).split(","):
                if u and u not in self._restart:
                    self._restart.append(u)
        live = under_root(self.root_dir, spec.path)
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
        stop = units_to_stop(self.runner, spec.stop)
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
            if not self.dry_run:  # (a dry run prints the command)
                _progress.info("copying %s (%.1f MiB) to %s", spec.path, need / (1 << 20), ds)
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
        live = under_root(self.root_dir, spec.path)
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
