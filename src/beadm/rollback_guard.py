"""The activate guard: what booting another BE takes back in time on the node itself.

Two checks compare the running root with the BE to activate (looked at through a
temporary read-only mount, :mod:`beadm.peek`):

- **Cluster** (refuses without ``--force``): a Proxmox cluster node has
  ``/etc/corosync/corosync.conf`` (written by pmxcfs from ``/etc/pve/corosync.conf``).
  A BE without it while the node is clustered predates the cluster join and boots
  standalone; a BE with it while the node is standalone predates the node's removal and
  brings a removed node back; a BE whose cluster name, node list or ``config_version``
  differs boots with another membership than the cluster's. Each can break the cluster.
  A ``corosync.conf`` that cannot be read or parsed is *unknown*: a reason too, never a
  crash.
- **Network and identity drift** (a warning): ``/etc/network/interfaces`` (and the files
  in ``interfaces.d/``), ``/etc/hosts`` and ``/etc/hostname`` as unified diffs. A host
  that boots unreachable is the worst rollback. A file missing on one side differs.

Paths served by a dataset outside the BE root (``beadm init --shared-state`` puts
``/etc/corosync`` in ``<pool>/etc-corosync``) are the same in every BE: the target's copy
is read from the running system, not from the directory its own root dataset shadows.

Files are read inside the given roots: a symbolic link is followed as the BE would see it
(an absolute target is taken from the BE's root, never from the running system's).
"""

from __future__ import annotations

import difflib
import errno
import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from beadm import confined
from beadm import mounts as mnt
from beadm.peek import Plan, look_into
from beadm.pvestate import serving_mount
from beadm.record import record
from beadm.runner import Runner

COROSYNC_DIR = "/etc/corosync"
COROSYNC_CONF = f"{COROSYNC_DIR}/corosync.conf"
NETWORK_FILES = ("/etc/network/interfaces", "/etc/hosts", "/etc/hostname")
INTERFACES_D = "/etc/network/interfaces.d"
#: What a BE is mounted for: every file the guard reads is below it.
PATHS = ("/etc",)
#: Paths that may be served by a dataset outside the BE root (shared by every BE).
SHAREABLE = (COROSYNC_DIR, "/etc/network", "/etc/hosts", "/etc/hostname")
#: Files larger than this are not read (none of these is anywhere near it).
MAX_BYTES = 1 << 20

#: Kinds of :class:`Cluster`.
STANDALONE = "standalone"
CLUSTERED = "clustered"
UNKNOWN = "unknown"


@record
class Content:
    """One file as read inside a root: its bytes, or why there are none."""

    data: bytes | None
    note: str = ""  # "" when read; "missing", "a directory", "unreadable: ...", ...

    @property
    def missing(self) -> bool:
        return self.data is None and self.note == "missing"


def read_in(root: Path, path: str) -> Content:
    """The file ``path`` of the system whose root is ``root`` (links followed inside it:
    :mod:`beadm.confined`)."""
    try:
        return Content(confined.read_bytes(root, path, limit=MAX_BYTES))
    except (FileNotFoundError, NotADirectoryError):
        return Content(None, "missing")
    except IsADirectoryError:
        return Content(None, "a directory")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Content(None, "a symbolic link loop")
        if exc.errno == errno.EFBIG:
            return Content(None, f"larger than {MAX_BYTES} bytes, not read")
        if exc.errno == errno.EINVAL:
            return Content(None, "not a regular file")
        return Content(None, f"unreadable: {exc.strerror}")


def list_in(root: Path, path: str) -> list[str]:
    """Names in the directory ``path`` of the system at ``root`` that a shell glob ``*``
    matches (what ifupdown's ``source /etc/network/interfaces.d/*`` reads)."""
    try:
        return [n for n in confined.listdir(root, path) if not n.startswith(".")]
    except OSError:
        return []


# -- cluster --------------------------------------------------------------------------------


@record
class Cluster:
    """What a root's ``corosync.conf`` says about the node's cluster membership."""

    kind: str  # STANDALONE, CLUSTERED or UNKNOWN
    name: str = ""
    version: str = ""
    nodes: tuple[str, ...] = ()
    why: str = ""  # UNKNOWN: why


_SECTION = re.compile(r"([A-Za-z0-9_.-]+)\s*\{")
_KEY = re.compile(r"([A-Za-z0-9_.-]+)\s*[:=]\s*(.*)")


def parse_corosync(text: str) -> Cluster:
    """``totem { cluster_name, config_version }`` and ``nodelist { node { name } }`` of a
    corosync.conf; anything that is not sections and ``key: value`` lines is UNKNOWN."""

    def unknown(why: str) -> Cluster:
        return Cluster(UNKNOWN, why=why)

    stack: list[str] = []
    name = version = ""
    nodes: list[str] = []
    node: str | None = None
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line == "}":
            if not stack:
                return unknown(f"line {n}: '}}' closes no section")
            if stack == ["nodelist", "node"]:
                if not node:
                    return unknown(f"line {n}: a node without a name")
                nodes.append(node)
            stack.pop()
            continue
        m = _SECTION.fullmatch(line)
        if m:
            stack.append(m[1])
            node = None
            continue
        m = _KEY.fullmatch(line)
        if m is None:
            return unknown(f"line {n}: neither 'key: value' nor a section")
        key, value = m[1], m[2].strip()
        if stack == ["totem"] and key == "cluster_name":
            name = value
        elif stack == ["totem"] and key == "config_version":
            version = value
        elif stack == ["nodelist", "node"] and key == "name":
            node = value
    if stack:
        return unknown(f"section {stack[-1]} is not closed")
    if not name:
        return unknown("no cluster_name in totem")
    return Cluster(CLUSTERED, name, version or "?", tuple(sorted(nodes)))


def cluster_of(content: Content) -> Cluster:
    """The cluster state of a root from its corosync.conf."""
    if content.missing:
        return Cluster(STANDALONE)
    if content.data is None:
        return Cluster(UNKNOWN, why=content.note)
    return parse_corosync(content.data.decode("utf-8", "surrogateescape"))


def cluster_reasons(be: str, running: str, cur: Cluster, tgt: Cluster) -> list[str]:
    """Why booting the BE ``be`` instead of ``running`` can break the cluster (one line
    each); empty when the two agree."""
    if cur == tgt:
        return []
    if tgt.kind == UNKNOWN:
        return [f"BE {be}: cannot tell whether it keeps the cluster: its {COROSYNC_CONF} "
                f"cannot be read ({tgt.why})"]
    if cur.kind == UNKNOWN:
        return [f"BE {be}: cannot tell whether it keeps the cluster: {COROSYNC_CONF} of the "
                f"running BE {running} cannot be read ({cur.why})"]
    if tgt.kind == STANDALONE:
        return [f"BE {be} predates the cluster join: it has no {COROSYNC_CONF} and would "
                f"boot standalone, out of cluster {cur.name}"]
    if cur.kind == STANDALONE:
        return [f"BE {be} predates the node's removal from cluster {tgt.name}: booting it "
                "brings a removed node back"]
    diffs = []
    if tgt.name != cur.name:
        diffs.append(f"cluster name {tgt.name} (running: {cur.name})")
    if tgt.nodes != cur.nodes:
        diffs.append(f"nodes {','.join(tgt.nodes) or '-'} (running: {','.join(cur.nodes) or '-'})")
    if tgt.version != cur.version:
        diffs.append(f"config_version {tgt.version} (running: {cur.version})")
    return [f"corosync config differs: BE {be} has {'; '.join(diffs)}"]


# -- network drift ----------------------------------------------------------------------------


@record
class Drift:
    """One file that differs: its unified diff, lines without line ends (not escaped)."""

    path: str
    diff: tuple[str, ...]


def _lines(c: Content) -> list[str]:
    if c.data is None:
        return [] if c.missing else [f"({c.note})"]
    text = c.data.decode("utf-8", "surrogateescape")
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def file_drift(path: str, a: Content, b: Content, a_name: str, b_name: str) -> Drift | None:
    """The diff of ``path`` from the running BE ``a_name`` to the BE ``b_name``."""
    if a == b:
        return None
    a_label = f"{a_name}:{path}" + (" (missing)" if a.missing else "")
    b_label = f"{b_name}:{path}" + (" (missing)" if b.missing else "")
    diff = list(difflib.unified_diff(_lines(a), _lines(b), a_label, b_label, lineterm=""))
    if not diff:  # the same lines: only the end of the file differs
        diff = [f"--- {a_label}", f"+++ {b_label}", "(they differ only in the final newline)"]
    return Drift(path, tuple(diff))


# -- the report -------------------------------------------------------------------------------


@record
class Report:
    """What booting ``be`` instead of the running BE ``running`` changes."""

    be: str
    running: str
    cluster: tuple[str, ...] = ()  # reasons to refuse, one line each
    drift: tuple[Drift, ...] = ()


def shared_paths(mounts: Sequence[mnt.Mount], be_root: str) -> set[str]:
    """The :data:`SHAREABLE` paths that a ZFS dataset outside the BE root serves in the
    running system: every BE mounts it at boot, so they see the running system's copy."""
    out = set()
    for path in SHAREABLE:
        m = serving_mount(mounts, path)
        if m is not None and m.fstype == "zfs" and not m.source.startswith(be_root + "/"):
            out.add(path)
    return out


def compare(
    running_root: Path, target_root: Path, *, be: str, running: str,
    shared: Collection[str] = (),
) -> Report:
    """The report for the BE ``be`` whose files are under ``target_root``."""

    def root_for(path: str) -> Path:
        inside = any(path == s or path.startswith(s + "/") for s in shared)
        return running_root if inside else target_root

    def target(path: str) -> Content:
        return read_in(root_for(path), path)

    cur_conf = read_in(running_root, COROSYNC_CONF)
    tgt_conf = target(COROSYNC_CONF)
    reasons: list[str] = []
    if cur_conf != tgt_conf:
        reasons = cluster_reasons(be, running, cluster_of(cur_conf), cluster_of(tgt_conf))
    names = set(list_in(running_root, INTERFACES_D))
    names |= set(list_in(root_for(INTERFACES_D), INTERFACES_D))
    paths = [*NETWORK_FILES[:1], *(f"{INTERFACES_D}/{n}" for n in sorted(names)),
             *NETWORK_FILES[1:]]
    drift = [d for p in paths
             if (d := file_drift(p, read_in(running_root, p), target(p), running, be))]
    return Report(be, running, tuple(reasons), tuple(drift))


def inspect(
    runner: Runner, plan: Plan, mounts: Sequence[mnt.Mount], *, be: str, running: str,
    running_root: Path, be_root: str, view: Callable[[], Path | None] | None = None,
) -> Report:
    """Mount the BE of ``plan`` read-only (unless it is mounted, or ``view`` has it: see
    :func:`beadm.peek.look_into`) and compare it with the running system at
    ``running_root``."""
    shared = shared_paths(mounts, be_root)
    with look_into(runner, plan, mounts, PATHS, view=view) as top:
        return compare(running_root, top, be=be, running=running, shared=shared)
