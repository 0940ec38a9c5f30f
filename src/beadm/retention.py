"""The retention policy of automatic snapshots and BEs: a pure function, data in,
decisions out.

``decide_all`` sees every snapshot of every BE root, every BE (made by beadm by itself or
not), the pool's space, the ESPs' space (when the boot backend can tell) and the policy;
it returns one :class:`Decision` per *automatic* snapshot (``org.beadm:auto`` set locally
on it) and one :class:`BeDecision` per *automatic* BE (``org.beadm:auto`` set locally on
its root: the clones ``beadm upgrade`` makes): keep or destroy, with the reason. It runs
no command; the executor (``BeManager.prune``) destroys through the BE layer.

The rules, in order:

1. Only automatic snapshots and BEs are candidates; anything else is not even looked at.
2. Held (always kept, not counted): a pinned one (``org.beadm:keep`` set locally to
   anything but no/off/false/0/empty); a snapshot that is the origin of a clone; a BE
   with a pinned snapshot; a BE the executor protects (``Be.held``: running, booting
   next or once, on trial, the pool's bootfs, mounted, an upgrade in progress, holding a
   snapshot beadm did not make or a pinned one, the origin of a clone that is no BE, or
   the boot backend refusing changes).
3. A BE whose upgrade failed (``failed``) boots nothing: it goes, and is not counted.
4. Of the rest, the newest ``keep`` are kept, and so are the newest ``keep_important``
   important ones (a kernel or a pve-manager major upgrade), wherever they rank;
   snapshots and BEs are ranked apart, each with these counts. The others go. A BE that
   is the origin of a kept BE is no exception: the executor destroys it as ``beadm
   destroy`` does, promoting the clone first (the clone keeps every block it needs).
5. ESP floor: while an ESP's free space, plus what the BEs going free on it, stays below
   ``esp_min_free``, more BEs go, ordinary before important, oldest first, but only ones
   whose entries or kernels (alone or with others going) are on such an ESP; a file
   shared with a BE that stays frees nothing. Snapshots hold nothing on the ESPs.
6. Pool floor: while the pool's free space, plus what is going, stays below
   ``pool_min_free``, more go: snapshots first, then BEs, each ordinary before important,
   oldest first.

"Newest" and "oldest" are by ``createtxg`` (the pool's transaction group when it was
made, which only grows), never by the ``creation`` time: after the clock went back (an
RTC reset, NTP correcting a fast clock) a new snapshot would otherwise rank as the
oldest and be the first to go. ``creation`` is only shown.

The floors override the counts; they never override rule 2. The snapshots of a BE that
goes go with it (except the origin of a clone: the promotion moves it to the clone).
Decisions are idempotent: applying them and deciding again destroys nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from beadm.backend import EspUsage
from beadm.record import record

#: Reasons, also shown by ``beadm prune`` and in its ``--json``.
KEEP_PINNED = "pinned (org.beadm:keep)"
KEEP_ORIGIN = "origin of {clones}"
KEEP_NEWEST = "one of the newest {n}"
KEEP_IMPORTANT = "important ({why}): one of the newest {n} important"
KEEP_PINNED_SNAP = "holds the pinned snapshot {snap}"
GO_COUNT = "older than the newest {n}"
GO_FLOOR = "pool free space below the floor ({floor})"
GO_ESP_FLOOR = "ESP {uuid} free space below the floor ({floor})"
GO_FAILED = "its upgrade failed: it boots nothing"
GO_WITH_BE = "goes with its BE {be}"


@record
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


@record
class Policy:
    keep: int = 10
    keep_important: int = 5
    pool_min_free: Floor = Floor(percent=20.0)
    esp_min_free: Floor = Floor(percent=10.0)


@record
class Snap:
    """One snapshot of a BE root (with the same-named snapshots of its child datasets)."""

    name: str  # e.g. rpool/ROOT/pve-1@beadm-auto-20261201-061500
    be: str
    created: int  # seconds since the epoch: shown only (the clock may have gone back)
    createtxg: int  # the pool's transaction group when it was made: what ranks it
    used: int  # bytes its destruction frees at least (sum over the BE's datasets)
    auto: bool  # org.beadm:auto set locally: beadm made it
    important: str = ""  # why it is important ("kernel", "pve-manager 8->9"), or ""
    pinned: bool = False
    clones: tuple[str, ...] = ()  # clones of it (or of its children's same-named snapshots)

    @property
    def age_key(self) -> tuple[int, str]:
        return (self.createtxg, self.name)


@record
class Space:
    """The pool's free bytes and its size (used + available of its top dataset)."""

    free: int
    size: int


@record
class Decision:
    snap: Snap
    destroy: bool
    reason: str


@record
class Be:
    """One BE as the policy sees it."""

    name: str
    created: int  # seconds since the epoch: shown only
    createtxg: int  # of its root: what ranks it
    used: int  # bytes its destruction frees at least
    auto: bool  # org.beadm:auto set locally on its root: beadm made it by itself
    important: str = ""
    pinned: bool = False
    held: str = ""  # why the executor protects it ("running now (N)", ...), or ""
    failed: bool = False  # its upgrade failed (org.beadm:state=failed)

    @property
    def age_key(self) -> tuple[int, str]:
        return (self.createtxg, self.name)


@record
class BeDecision:
    be: Be
    destroy: bool
    reason: str


@record
class Decisions:
    """Snapshots and BEs, each newest first."""

    snaps: tuple[Decision, ...]
    bes: tuple[BeDecision, ...]


def decide(snaps: Iterable[Snap], space: Space, policy: Policy) -> tuple[Decision, ...]:
    """One decision per automatic snapshot, newest first (no BE is a candidate)."""
    return decide_all(snaps, (), space, None, policy).snaps


def _counted(items: Sequence[Snap | Be], policy: Policy,
             reason: dict[str, str]) -> set[str]:
    """Rule 4 over ``items`` (newest first): the names that go; reasons into ``reason``."""
    go: set[str] = set()
    important_rank = 0
    for rank, s in enumerate(items):
        if s.important:
            important_rank += 1
        if rank < policy.keep:
            reason[s.name] = KEEP_NEWEST.format(n=policy.keep)
        elif s.important and important_rank <= policy.keep_important:
            reason[s.name] = KEEP_IMPORTANT.format(why=s.important, n=policy.keep_important)
        else:
            reason[s.name] = GO_COUNT.format(n=policy.keep)
            go.add(s.name)
    return go


def esp_free_after(esp: EspUsage, going: set[str]) -> int:
    """An ESP's free bytes once the BEs ``going`` are gone: every file only they need."""
    return esp.free + sum(n for n, refs in esp.files if refs and refs <= going)


def decide_all(snaps: Iterable[Snap], bes: Iterable[Be], space: Space,
               esps: Sequence[EspUsage] | None, policy: Policy) -> Decisions:
    """One decision per automatic snapshot and per automatic BE (see the module doc)."""
    snaps = list(snaps)
    auto_bes = sorted((b for b in bes if b.auto), key=lambda b: b.age_key, reverse=True)
    pinned_snap = {s.be: s.name for s in sorted(snaps, key=lambda s: s.age_key) if s.pinned}
    breason: dict[str, str] = {}
    bgo: set[str] = set()
    brot: list[Be] = []
    for b in auto_bes:
        if b.held:
            breason[b.name] = b.held
        elif b.name in pinned_snap:
            breason[b.name] = KEEP_PINNED_SNAP.format(snap=pinned_snap[b.name])
        elif b.pinned:
            breason[b.name] = KEEP_PINNED
        elif b.failed:
            breason[b.name] = GO_FAILED
            bgo.add(b.name)
        else:
            brot.append(b)
    bgo |= _counted(brot, policy, breason)
    # candidates for the floors, in the order they go: ordinary before important, oldest
    bqueue = sorted(brot, key=lambda b: (bool(b.important), b.age_key))
    for esp in esps or ():
        floor = policy.esp_min_free.of(esp.size)
        may = {b.name for b in auto_bes if b.name in bgo} | {b.name for b in bqueue}
        while esp_free_after(esp, bgo) < floor:
            # a file still held only by BEs that may go: the next of them that needs one
            wanted = set().union(*(refs for _, refs in esp.files
                                   if refs and refs <= may and not refs <= bgo))
            pick = next((b for b in bqueue if b.name not in bgo and b.name in wanted), None)
            if pick is None:
                break
            bgo.add(pick.name)
            breason[pick.name] = GO_ESP_FLOOR.format(uuid=esp.uuid, floor=policy.esp_min_free)

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
    go |= _counted(rotating, policy, reason)

    used = {b.name: b.used for b in auto_bes}

    def pool_free() -> int:
        return (space.free + sum(used[n] for n in bgo)
                + sum(s.used for s in rotating if s.name in go and s.be not in bgo))

    floor = policy.pool_min_free.of(space.size)
    if pool_free() < floor:
        queue: list[tuple[str, Snap | Be]] = [
            ("snap", s) for s in sorted((s for s in rotating if s.name not in go),
                                        key=lambda s: (bool(s.important), s.age_key))]
        queue += [("be", b) for b in bqueue if b.name not in bgo]
        for kind, x in queue:
            if pool_free() >= floor:
                break
            if kind == "be" and x.name not in bgo:
                bgo.add(x.name)
                breason[x.name] = GO_FLOOR.format(floor=policy.pool_min_free)
            elif kind == "snap" and x.name not in go and isinstance(x, Snap) \
                    and x.be not in bgo:
                go.add(x.name)
                reason[x.name] = GO_FLOOR.format(floor=policy.pool_min_free)
    # the snapshots of a BE that goes go with it, but an origin of a clone (it moves)
    for s in auto:
        if s.be in bgo and s.name not in go and not s.clones:
            go.add(s.name)
            reason[s.name] = GO_WITH_BE.format(be=s.be)
    return Decisions(
        tuple(Decision(s, s.name in go, reason[s.name]) for s in auto),
        tuple(BeDecision(b, b.name in bgo, breason[b.name]) for b in auto_bes),
    )


def projected_free(decisions: Iterable[Decision], space: Space) -> int:
    """The pool's free bytes after the decisions (at least: snapshots share blocks)."""
    return space.free + sum(d.snap.used for d in decisions if d.destroy)
