"""The retention policy (beadm.retention.decide) against a model, with hypothesis.

The model is written the slow, obvious way (each snapshot's rank counted by comparing it
with every other), so that a shared mistake is unlikely; the invariants are the ones
beadm(8) promises: never an unmarked, pinned or cloned snapshot, floors override counts,
deciding again after applying the decisions destroys nothing more.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from beadm.retention import Decision, Floor, Policy, Snap, Space, decide


@st.composite
def snaps(draw: st.DrawFn) -> list[Snap]:
    n = draw(st.integers(0, 25))
    out = []
    for i in range(n):
        auto = draw(st.booleans()) or draw(st.booleans())
        out.append(Snap(
            name=f"rpool/ROOT/pve-{i % 3}@{'beadm-auto' if auto else 'mine'}-{i}",
            be=f"pve-{i % 3}",
            created=draw(st.integers(1_700_000_000, 1_700_000_050)),  # ties happen
            createtxg=i,
            used=draw(st.integers(0, 100)),
            auto=auto,
            important=draw(st.sampled_from(["", "", "", "kernel", "pve-manager 8->9"])),
            pinned=draw(st.integers(0, 9)) == 0,
            clones=("rpool/ROOT/x",) if draw(st.integers(0, 9)) == 0 else (),
        ))
    return out


policies = st.builds(
    Policy,
    keep=st.integers(0, 8),
    keep_important=st.integers(0, 5),
    pool_min_free=st.one_of(
        st.builds(Floor, percent=st.floats(0, 100, allow_nan=False)),
        st.builds(Floor, bytes=st.integers(0, 1500)),
    ),
)
spaces = st.builds(Space, free=st.integers(0, 1000), size=st.integers(1000, 2000))


def model(items: list[Snap], space: Space, policy: Policy) -> set[str]:
    """What goes, computed without decide's code."""
    def newer(a: Snap, b: Snap) -> bool:
        return (a.created, a.createtxg, a.name) > (b.created, b.createtxg, b.name)

    rot = [s for s in items if s.auto and not s.pinned and not s.clones]
    kept = set()
    for s in rot:
        rank = sum(1 for o in rot if newer(o, s))
        irank = sum(1 for o in rot if o.important and newer(o, s))
        if rank < policy.keep or (s.important and irank < policy.keep_important):
            kept.add(s.name)
    go = {s.name for s in rot} - kept
    free = space.free + sum(s.used for s in rot if s.name in go)
    floor = policy.pool_min_free.of(space.size)
    while free < floor:
        left = [s for s in rot if s.name not in go]
        if not left:
            break
        # ordinary before important, then the oldest
        victim = min(left, key=lambda s: (bool(s.important), s.created, s.createtxg, s.name))
        go.add(victim.name)
        free += victim.used
    return go


def gone(decisions: tuple[Decision, ...]) -> set[str]:
    return {d.snap.name for d in decisions if d.destroy}


@settings(max_examples=400)
@given(snaps(), spaces, policies)
def test_decide_matches_the_model(items: list[Snap], space: Space, policy: Policy) -> None:
    decisions = decide(items, space, policy)
    assert gone(decisions) == model(items, space, policy)
    # one decision per automatic snapshot, none for the others, each with a reason
    assert sorted(d.snap.name for d in decisions) == sorted(s.name for s in items if s.auto)
    assert all(d.reason for d in decisions)


@settings(max_examples=400)
@given(snaps(), spaces, policies)
def test_invariants(items: list[Snap], space: Space, policy: Policy) -> None:
    decisions = decide(items, space, policy)
    by_name = {s.name: s for s in items}
    for name in gone(decisions):
        s = by_name[name]
        assert s.auto, "an unmarked snapshot was chosen"
        assert not s.pinned, "a pinned snapshot was chosen"
        assert not s.clones, "the origin of a kept clone was chosen"
    # the floor overrides the counts: after pruning the pool is above the floor, or every
    # snapshot that may go is going
    floor = policy.pool_min_free.of(space.size)
    free = space.free + sum(by_name[n].used for n in gone(decisions))
    eligible = {s.name for s in items if s.auto and not s.pinned and not s.clones}
    assert free >= floor or gone(decisions) == eligible
    # without floor pressure, the newest `keep` eligible snapshots always stay
    if space.free >= floor:
        newest = sorted((by_name[n] for n in eligible), key=lambda s: s.age_key, reverse=True)
        assert not {s.name for s in newest[: policy.keep]} & gone(decisions)


@settings(max_examples=400)
@given(snaps(), spaces, policies)
def test_pruning_twice_removes_nothing_more(
    items: list[Snap], space: Space, policy: Policy
) -> None:
    first = decide(items, space, policy)
    went = gone(first)
    freed = sum(d.snap.used for d in first if d.destroy)
    left = [s for s in items if s.name not in went]
    again = decide(left, Space(space.free + freed, space.size), policy)
    assert gone(again) == set()


@given(snaps(), spaces, policies, st.randoms())
def test_input_order_does_not_matter(
    items: list[Snap], space: Space, policy: Policy, rnd: random.Random
) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert decide(shuffled, space, policy) == decide(items, space, policy)


def test_examples() -> None:
    def s(i: int, **kw: object) -> Snap:
        return Snap(name=f"r/ROOT/a@beadm-auto-{i}", be="a", created=i, createtxg=i,
                    used=10, auto=True, **kw)  # type: ignore[arg-type]

    items = [s(1, important="kernel"), s(2), s(3), s(4), s(5, pinned=True),
             s(6, clones=("r/ROOT/b",))]
    d = {x.snap.name.rpartition("-")[2]: x for x in
         decide(items, Space(free=900, size=1000), Policy(keep=2, keep_important=1))}
    assert [k for k, x in d.items() if x.destroy] == ["2"]
    assert d["1"].reason == "important (kernel): one of the newest 1 important"
    assert d["4"].reason == "one of the newest 2"
    assert d["2"].reason == "older than the newest 2"
    assert d["5"].reason == "pinned (org.beadm:keep)"
    assert d["6"].reason == "origin of r/ROOT/b"
    # below the floor: ordinary first (3, then 4), the important one last
    tight = decide(items, Space(free=0, size=1000),
                   Policy(keep=2, keep_important=1, pool_min_free=Floor(bytes=25)))
    assert sorted(x.snap.name[-1] for x in tight if x.destroy) == ["2", "3", "4"]
