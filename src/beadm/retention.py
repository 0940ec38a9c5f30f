"""The retention policy of automatic snapshots: a pure function, data in, decisions out.

``decide`` sees every snapshot of every BE root (made by beadm's apt hook or not), the
pool's space and the policy, and returns one :class:`Decision` per *automatic* snapshot
(``org.beadm:auto`` set locally on it): keep or destroy, with the reason. It runs no
command; the executor (``BeManager.prune``) destroys through the BE layer.

The rules, in order:

1. Only automatic snapshots are candidates; anything else is not even looked at.
2. A pinned snapshot (``org.beadm:keep=yes``) and one that is the origin of a clone (a BE
   made with ``create -e BE@beadm-auto-...``) are *held*: always kept, and not counted.
3. Of the rest, the newest ``keep`` are kept, and so are the newest ``keep_important``
   important ones (a kernel or a pve-manager major upgrade), wherever they rank.
4. The others go.
5. Floor: while the pool's free space, plus what the snapshots going free, stays below
   the floor, more go, ordinary ones before important ones, oldest first. The floor
   overrides the counts; it never overrides rule 2.

Decisions are idempotent: applying them and deciding again destroys nothing more (what
is kept keeps its rank or improves it; the freed space only grows).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: Reasons, also shown by ``beadm prune`` and in its ``--json``.
KEEP_PINNED = "pinned (org.beadm:keep)"
KEEP_ORIGIN = "origin of {clones}"
KEEP_NEWEST = "one of the newest {n}"
KEEP_IMPORTANT = "important ({why}): one of the newest {n} important"
GO_COUNT = "older than the newest {n}"
GO_FLOOR = "pool free space below the floor ({floor})"


@dataclass(frozen=True)
class Floor:
    """A free-space floor: a percentage of the pool's size, or a number of bytes."""

    percent: float | None = None
    bytes: int = 0

    def of(self, size: int) -> int:
        if self.percent is not None:
            return int(size * self.percent / 100)
        return self.bytes

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.bytes} bytes"


@dataclass(frozen=True)
class Policy:
    keep: int = 10
    keep_important: int = 5
    pool_min_free: Floor = Floor(percent=20.0)


@dataclass(frozen=True)
class Snap:
    """One snapshot of a BE root (with the same-named snapshots of its child datasets)."""

    name: str  # e.g. rpool/ROOT/pve-1@beadm-auto-20261201-061500
    be: str
    created: int  # seconds since the epoch
    createtxg: int
    used: int  # bytes its destruction frees at least (sum over the BE's datasets)
    auto: bool  # org.beadm:auto set locally: beadm made it
    important: str = ""  # why it is important ("kernel", "pve-manager 8->9"), or ""
    pinned: bool = False
    clones: tuple[str, ...] = ()  # clones of it (or of its children's same-named snapshots)

    @property
    def age_key(self) -> tuple[int, int, str]:
        return (self.created, self.createtxg, self.name)


@dataclass(frozen=True)
class Space:
    """The pool's free bytes and its size (used + available of its top dataset)."""

    free: int
    size: int


@dataclass(frozen=True)
class Decision:
    snap: Snap
    destroy: bool
    reason: str


def decide(snaps: Iterable[Snap], space: Space, policy: Policy) -> tuple[Decision, ...]:
    """One decision per automatic snapshot, newest first."""
    auto = sorted((s for s in snaps if s.auto), key=lambda s: s.age_key, reverse=True)
    reason: dict[str, str] = {}
    go: set[str] = set()
    rotating: list[Snap] = []
    for s in auto:
        if s.pinned:
            reason[s.name] = KEEP_PINNED
        elif s.clones:
            reason[s.name] = KEEP_ORIGIN.format(clones=", ".join(s.clones))
        else:
            rotating.append(s)
    important_rank = 0
    for rank, s in enumerate(rotating):
        if s.important:
            important_rank += 1
        if rank < policy.keep:
            reason[s.name] = KEEP_NEWEST.format(n=policy.keep)
        elif s.important and important_rank <= policy.keep_important:
            reason[s.name] = KEEP_IMPORTANT.format(why=s.important, n=policy.keep_important)
        else:
            reason[s.name] = GO_COUNT.format(n=policy.keep)
            go.add(s.name)
    floor = policy.pool_min_free.of(space.size)
    free = space.free + sum(s.used for s in rotating if s.name in go)
    if free < floor:
        oldest_first = sorted(
            (s for s in rotating if s.name not in go),
            key=lambda s: (bool(s.important), s.age_key),
        )
        for s in oldest_first:
            if free >= floor:
                break
            go.add(s.name)
            reason[s.name] = GO_FLOOR.format(floor=policy.pool_min_free)
            free += s.used
    return tuple(Decision(s, s.name in go, reason[s.name]) for s in auto)


def projected_free(decisions: Iterable[Decision], space: Space) -> int:
    """The pool's free bytes after the decisions (at least: snapshots share blocks)."""
    return space.free + sum(d.snap.used for d in decisions if d.destroy)
