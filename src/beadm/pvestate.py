"""Proxmox state that must not go back in time with a BE: what beadm shares, and where it lives.

On a Proxmox VE host the root dataset holds more than the OS: ``/var/lib/pve-cluster``
(``config.db``, the backing store of ``/etc/pve``: every guest's configuration), and on
installs older than 8.1.5 ``/var/lib/vz`` (ISOs, templates, vzdump backups). Booting an
older BE would take them back in time. :data:`SHARED` lists the paths beadm shares between
all BEs, each in its own dataset outside the BE root, named like the installer's own
``rpool/var-lib-vz`` (see beadm(8), SHARED STATE).

:func:`detect` is a pure function over the pool's dataset list and the mount table: one
:class:`Finding` per shared path (inside the BE, shared already, a move to finish, ...).
:func:`in_use` names the shared datasets in service. The rest of the feature:
:mod:`beadm.statemove` moves a path out of the BE (kill-safe), stopping the services that
write it (:mod:`beadm.stateservices`); :mod:`beadm.statecopy` copies and verifies live
state; :mod:`beadm.statedropins` gives every BE the systemd drop-ins the shared datasets
need.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Container, Mapping, Sequence

from beadm import mounts as mnt
from beadm.record import record
from beadm.zfs import Dataset

STATE_MOVING = "moving"  # created .. mounted at its path: the BE's copy is complete
STATE_REMOVING = "removing"  # mounted at its path, the BE's copy may be partly gone
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


def under_root(root_dir: str, path: str) -> str:
    """``path`` as seen from the system at ``root_dir``."""
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
            st = lstat(under_root(root_dir, done))
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
        m = serving_mount(mounts, under_root(root_dir, sp.path))
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

