"""The BE view of one ``zfs list`` of the BE root: which datasets and snapshots form which BE."""

from __future__ import annotations

from beadm.record import record
from beadm.zfs import Dataset

#: Snapshots beadm makes are named ``beadm-YYYYmmdd-HHMMSS`` with an optional ``-N``.
SNAP_PREFIX = "beadm-"
#: Snapshots the apt hook makes: ``beadm-auto-YYYYmmdd-HHMMSS`` (``-N``), which
#: :func:`is_beadm_snapshot` does not match (``destroy`` keeps them; ``prune`` decides).
AUTO_PREFIX = "beadm-auto-"


def is_beadm_snapshot(snapname: str) -> bool:
    """True when ``snapname`` (the part after ``@``) has the shape of beadm's own snapshots."""
    if not snapname.startswith(SNAP_PREFIX):
        return False
    parts = snapname[len(SNAP_PREFIX) :].split("-")
    if len(parts) not in (2, 3):
        return False
    day, time_ = parts[0], parts[1]
    ok = len(day) == 8 and day.isdigit() and len(time_) == 6 and time_.isdigit()
    return ok and (len(parts) == 2 or parts[2].isdigit())


def _depth_key(name: str) -> tuple[int, str]:
    return (name.count("/"), name)


@record
class BootEnv:
    """One BE: a direct child filesystem of the BE root, with its descendants."""

    name: str
    dataset: str
    datasets: tuple[Dataset, ...]  # the BE root first, then descendants (parents first)
    snapshots: tuple[Dataset, ...]  # snapshots of all of them, oldest first

    @property
    def root(self) -> Dataset:
        return self.datasets[0]

    @property
    def description(self) -> str:
        return self.root.description

    @property
    def space(self) -> int:
        """Bytes used by the BE root and its descendants, snapshots included."""
        return self.root.used

    @property
    def space_without_snapshots(self) -> int:
        return self.root.used - sum(d.usedbysnapshots for d in self.datasets)


class Tree:
    """Index over one ``zfs list -r ROOT`` result."""

    def __init__(self, root: str, items: list[Dataset]) -> None:
        self.root = root
        self.items = items
        self.fs: dict[str, Dataset] = {}
        self.snaps: dict[str, list[Dataset]] = {}
        self.by_name: dict[str, Dataset] = {}
        for d in items:
            self.by_name[d.name] = d
            if d.is_snapshot:
                self.snaps.setdefault(d.dataset, []).append(d)
            else:
                self.fs[d.name] = d
        for lst in self.snaps.values():
            lst.sort(key=lambda s: (s.createtxg, s.name))

    def be_dataset(self, name: str) -> str:
        return f"{self.root}/{name}"

    def be_names(self) -> list[str]:
        prefix = self.root + "/"
        return sorted(
            n[len(prefix) :]
            for n in self.fs
            if n.startswith(prefix) and "/" not in n[len(prefix) :]
        )

    def has_be(self, name: str) -> bool:
        return self.be_dataset(name) in self.fs

    def be(self, name: str) -> BootEnv:
        top = self.be_dataset(name)
        prefix = top + "/"
        names = sorted((n for n in self.fs if n == top or n.startswith(prefix)), key=_depth_key)
        datasets = tuple(self.fs[n] for n in names)
        snaps = [s for n in names for s in self.snaps.get(n, [])]
        snaps.sort(key=lambda s: (s.createtxg, s.name))
        return BootEnv(name, top, datasets, tuple(snaps))

    def bes(self) -> list[BootEnv]:
        return [self.be(n) for n in self.be_names()]

    def snapshot(self, name: str) -> Dataset | None:
        d = self.by_name.get(name)
        return d if d is not None and d.is_snapshot else None

    def without(self, removed: set[str]) -> Tree:
        """A copy without the named datasets (and their snapshots)."""
        keep = [d for d in self.items if d.dataset not in removed and d.name not in removed]
        return Tree(self.root, keep)
