"""A thin typed layer over the ``zfs`` and ``zpool`` commands. It knows nothing of BEs.

Every zfs/zpool argv of beadm, and every ZFS mount (the helper form
``mount -t zfs -o [ro,]zfsutil DATASET DIR``), is built here. Queries use ``-H -p``
(tab-separated, exact numbers) and run ``readonly`` so a dry run still sees the real
state; changes go through the injected runner as argv lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from beadm.record import record
from beadm.runner import Runner

#: User-property namespace of beadm.
PROP_DESCRIPTION = "org.beadm:description"
PROP_STATE = "org.beadm:state"
#: On snapshots the apt hook makes: what made it ("apt"), why it is important (kernel, a
#: pve-manager major upgrade), which apt run made it; set by hand: keep it (any value
#: but no/off/false/0/empty pins).
PROP_AUTO = "org.beadm:auto"
PROP_IMPORTANT = "org.beadm:important"
PROP_APT_RUN = "org.beadm:apt-run"
PROP_KEEP = "org.beadm:keep"
SNAPSHOT_PROPS = (PROP_AUTO, PROP_IMPORTANT, PROP_APT_RUN, PROP_KEEP)

#: Columns of :meth:`Zfs.list_tree`, in order. The description is last so that a tab
#: inside it cannot shift the other columns.
LIST_COLUMNS: tuple[str, ...] = (
    "name",
    "type",
    "used",
    "usedbysnapshots",
    "creation",
    "createtxg",
    "mountpoint",
    "mounted",
    "canmount",
    "origin",
    "clones",
    PROP_STATE,
    PROP_DESCRIPTION,
)


@record
class Dataset:
    """One filesystem or snapshot as ``zfs list -H -p`` reports it ("-" becomes "" / 0)."""

    name: str
    type: str  # "filesystem" | "snapshot" | "volume"
    used: int
    usedbysnapshots: int
    creation: int  # seconds since the epoch
    createtxg: int
    mountpoint: str  # "" for snapshots
    mounted: bool
    canmount: str  # "on" | "off" | "noauto" | "" (snapshots)
    origin: str  # "" when not a clone
    clones: tuple[str, ...]  # snapshots only
    state: str  # org.beadm:state, "" when unset
    description: str  # org.beadm:description, "" when unset

    @property
    def is_snapshot(self) -> bool:
        return self.type == "snapshot"

    @property
    def dataset(self) -> str:
        """For a snapshot, the dataset it belongs to; else the name itself."""
        return self.name.partition("@")[0]

    @property
    def snapname(self) -> str:
        """For a snapshot, the part after ``@``; else ""."""
        return self.name.partition("@")[2]


def _dash(value: str) -> str:
    return "" if value == "-" else value


def _int(value: str) -> int:
    value = _dash(value)
    return int(value) if value else 0


def _records(text: str, fields: int) -> list[list[str]]:
    """Split ``zfs -H`` output into records of at least ``fields`` tab-separated fields.

    Only ``\n`` ends a line (``str.splitlines`` also splits on ``\x0b``, ``\x1c``,
    ``\x85``, U+2028, ... which a property value may contain). A value set by hand may
    even contain ``\n``: a line with fewer fields than a record continues the previous
    record's last field.
    """
    out: list[list[str]] = []
    for line in text.split("\n"):
        f = line.split("\t", fields - 1)
        if len(f) == fields:
            out.append(f)
        elif out:
            out[-1][-1] += "\n" + line
        elif line:
            raise ValueError(f"unexpected zfs output line: {line!r}")
    for rec in out:  # the newline that ended the last record is not part of it
        rec[-1] = rec[-1].rstrip("\n")
    return out


def parse_list(text: str) -> list[Dataset]:
    """Parse ``zfs list -H -p -o <LIST_COLUMNS>`` output."""
    out: list[Dataset] = []
    n = len(LIST_COLUMNS)
    for f in _records(text, n):
        clones = _dash(f[10])
        out.append(
            Dataset(
                name=f[0],
                type=f[1],
                used=_int(f[2]),
                usedbysnapshots=_int(f[3]),
                creation=_int(f[4]),
                createtxg=_int(f[5]),
                mountpoint=_dash(f[6]),
                mounted=f[7] == "yes",
                canmount=_dash(f[8]),
                origin=_dash(f[9]),
                clones=tuple(c for c in clones.split(",") if c),
                state=_dash(f[11]),
                description=_dash(f[12]),
            )
        )
    return out


@record
class PropValue:
    """One line of ``zfs get -H -p -o name,property,value,source``."""

    dataset: str
    prop: str
    value: str
    source: str  # "local", "received", "default", "inherited from X", "-"


def parse_get(text: str) -> list[PropValue]:
    """Parse ``zfs get -H -p -o name,property,value,source`` output."""
    out: list[PropValue] = []
    for name, prop, rest in _records(text, 3):
        value, _, source = rest.rpartition("\t")
        out.append(PropValue(name, prop, value, source))
    return out


class Zfs:
    """ZFS commands through a :class:`beadm.runner.Runner`."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    # -- queries (readonly) ------------------------------------------------------------

    def list_tree(self, root: str, *, snapshots: bool = True,
                  depth: int | None = None) -> list[Dataset]:
        """Every filesystem (and snapshot) at or below ``root`` (at most ``depth`` levels
        below it): one ``zfs list`` call."""
        types = "filesystem,snapshot" if snapshots else "filesystem"
        argv = ["zfs", "list", "-H", "-p", "-t", types]
        argv += ["-o", ",".join(LIST_COLUMNS)]
        argv += ["-r", root] if depth is None else ["-d", str(depth), root]
        return parse_list(self.runner.run(argv, readonly=True).stdout)

    def exists(self, name: str) -> bool:
        res = self.runner.run(["zfs", "list", "-H", "-o", "name", name], readonly=True, check=False)
        return res.returncode == 0

    def local_props(self, root: str) -> list[PropValue]:
        """Properties set locally or received, on ``root`` and its descendants."""
        argv = ["zfs", "get", "-H", "-p", "-o", "name,property,value,source"]
        argv += ["-s", "local,received", "-t", "filesystem", "-r", "all", root]
        return parse_get(self.runner.run(argv, readonly=True).stdout)

    def snapshot_props(self, root: str, props: Sequence[str], *,
                       types: str = "snapshot") -> dict[str, dict[str, str]]:
        """``props`` set *locally* on snapshots (or ``types``) at or below ``root``:
        {name: {prop: value}}. Inherited values (a property set on the parent) do not
        count."""
        argv = ["zfs", "get", "-H", "-p", "-t", types, "-s", "local"]
        argv += ["-o", "name,property,value,source", "-r", ",".join(props), root]
        out: dict[str, dict[str, str]] = {}
        for pv in parse_get(self.runner.run(argv, readonly=True).stdout):
            if pv.source == "local":
                out.setdefault(pv.dataset, {})[pv.prop] = pv.value
        return out

    def userrefs(self, snapshots: Sequence[str]) -> dict[str, int]:
        """How many ``zfs hold`` tags each of ``snapshots`` has (``userrefs``; a held
        snapshot cannot be destroyed): one ``zfs get`` for all of them. One that is gone
        is left out (zfs says so on stderr and goes on with the others)."""
        if not snapshots:
            return {}
        argv = ["zfs", "get", "-H", "-p", "-o", "name,value", "userrefs", *snapshots]
        res = self.runner.run(argv, readonly=True, check=False)
        return {name: _int(value) for name, value in _records(res.stdout, 2)}

    def space(self, dataset: str) -> tuple[int, int]:
        """(used, available) bytes of ``dataset``."""
        argv = ["zfs", "get", "-H", "-p", "-o", "value", "used,available", dataset]
        used, avail = (_int(v) for v in self.runner.run(argv, readonly=True).stdout.split())
        return used, avail

    def get(self, name: str, prop: str) -> str:
        argv = ["zfs", "get", "-H", "-p", "-o", "value", prop, name]
        return _dash(self.runner.run(argv, readonly=True).stdout.rstrip("\n"))

    def version(self) -> str:
        """What ``zfs version`` prints ("" when it fails): an unchecked query, run for its
        error too: without the OpenZFS tools the runner says "zfs: command not found"."""
        res = self.runner.run(["zfs", "version"], readonly=True, check=False)
        return res.stdout.rstrip("\n") if res.returncode == 0 else ""

    def pool_props(self, pool: str, props: Sequence[str]) -> dict[str, str]:
        """Several pool properties with one ``zpool get`` (each ``zpool`` process costs
        0.2-0.4 s under emulation, issue 15): {property: value}, ``-`` read as empty."""
        argv = ["zpool", "get", "-H", "-p", "-o", "property,value", ",".join(props), pool]
        got = {k: _dash(v) for k, v in _records(self.runner.run(argv, readonly=True).stdout, 2)}
        missing = [p for p in props if p not in got]
        if missing:
            raise ValueError(f"zpool get {','.join(props)} {pool} did not print "
                             f"{', '.join(missing)}")
        return got

    # -- changes -----------------------------------------------------------------------

    def snapshot(
        self, name: str, *, recursive: bool, props: Mapping[str, str] | None = None
    ) -> None:
        argv = ["zfs", "snapshot"]
        if recursive:
            argv.append("-r")
        argv += _opts((props or {}).items())
        self.runner.run([*argv, name])

    def clone(self, snapshot: str, target: str, props: Sequence[tuple[str, str]]) -> None:
        self.runner.run(["zfs", "clone", *_opts(props), snapshot, target])

    def create(self, name: str, props: Sequence[tuple[str, str]]) -> None:
        """``zfs create -o PROP=VALUE... NAME``, the properties in the given order."""
        self.runner.run(["zfs", "create", *_opts(props), name])

    def mount(self, name: str) -> None:
        """``zfs mount NAME``: at its ``mountpoint`` property."""
        self.runner.run(["zfs", "mount", name])

    def mount_at(self, name: str, target: str, *, ro: bool = False,
                 readonly: bool = False) -> None:
        """Mount ``name`` on directory ``target`` with the ZFS helper (:func:`mount_argv`);
        ``ro``: the mount is read-only; ``readonly``: the runner's flag (a query: it runs
        in a dry run too)."""
        self.runner.run([*mount_argv(name, ro=ro), target], readonly=readonly)

    def set(self, name: str, prop: str, value: str) -> None:
        self.runner.run(["zfs", "set", f"{prop}={value}", name])

    def inherit(self, name: str, prop: str) -> None:
        self.runner.run(["zfs", "inherit", prop, name])

    def inherit_all(self, names: Sequence[str], prop: str) -> None:
        """``zfs inherit PROP NAME...``: one process for many datasets and snapshots. Not
        atomic: zfs clears them one at a time, sorted by name (not in the given order), and
        goes on past one that fails; a caller must be safe with any subset cleared."""
        self.runner.run(["zfs", "inherit", prop, *names])

    def promote(self, name: str) -> None:
        self.runner.run(["zfs", "promote", name])

    def rename(self, old: str, new: str) -> None:
        self.runner.run(["zfs", "rename", "-u", old, new])

    def destroy(self, name: str, *, recursive: bool = False) -> None:
        argv = ["zfs", "destroy"]
        if recursive:
            argv.append("-r")
        self.runner.run([*argv, name])

    def pool_set(self, pool: str, prop: str, value: str) -> None:
        self.runner.run(["zpool", "set", f"{prop}={value}", pool])


def mount_argv(name: str, *, ro: bool = False) -> list[str]:
    """``mount -t zfs -o [ro,]zfsutil NAME``, the directory to append: the ZFS mount
    helper's form, which mounts ``name`` wherever asked, whatever its ``mountpoint`` and
    ``canmount`` say (a private or temporary mount). For a caller that runs it itself;
    else :meth:`Zfs.mount_at`."""
    return ["mount", "-t", "zfs", "-o", "ro,zfsutil" if ro else "zfsutil", name]


def _opts(props: Iterable[tuple[str, str]]) -> list[str]:
    argv: list[str] = []
    for k, v in props:
        argv += ["-o", f"{k}={v}"]
    return argv
