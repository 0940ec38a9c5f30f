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

from beadm.backend import EspUsage
from beadm.retention import (
    Be,
    Decision,
    Decisions,
    Floor,
    Policy,
    Snap,
    Space,
    decide,
    decide_all,
    esp_free_after,
)


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
        return (a.createtxg, a.name) > (b.createtxg, b.name)

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
        victim = min(left, key=lambda s: (bool(s.important), s.createtxg, s.name))
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


# -- automatic BEs and the ESP floor ------------------------------------------------------

HELD = ["", "", "", "", "running now (N)", "boots next (R)", "mounted at /mnt"]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Snap], list[Be], tuple[EspUsage, ...] | None]:
    """BEs (automatic or not, held, pinned, failed), their snapshots, and ESPs whose files
    are needed by one or more BEs (or by something that is no BE)."""
    nb = draw(st.integers(0, 8))
    bes = []
    for i in range(nb):
        bes.append(Be(
            name=f"be{i}",
            created=draw(st.integers(1_700_000_000, 1_700_000_020)),
            createtxg=i,
            used=draw(st.integers(0, 100)),
            auto=draw(st.integers(0, 4)) > 0,
            important=draw(st.sampled_from(["", "", "kernel"])),
            pinned=draw(st.integers(0, 9)) == 0,
            held=draw(st.sampled_from(HELD)),
            failed=draw(st.integers(0, 7)) == 0,
        ))
    names = [b.name for b in bes] + ["(entry proxmox-x.conf)"]
    snaps = []
    for j in range(draw(st.integers(0, 10)) if bes else 0):
        auto = draw(st.booleans())
        be = draw(st.sampled_from(bes)).name
        snaps.append(Snap(
            name=f"rpool/ROOT/{be}@{'beadm-auto' if auto else 'mine'}-{j}", be=be,
            created=draw(st.integers(1_700_000_000, 1_700_000_020)), createtxg=100 + j,
            used=draw(st.integers(0, 50)), auto=auto,
            important=draw(st.sampled_from(["", "kernel"])),
            pinned=draw(st.integers(0, 9)) == 0,
            clones=("rpool/ROOT/x",) if draw(st.integers(0, 9)) == 0 else (),
        ))
    if draw(st.integers(0, 4)) == 0:
        return snaps, bes, None
    esps = []
    for k in range(draw(st.integers(1, 2))):
        files = tuple(
            (draw(st.integers(1, 40)),
             frozenset(draw(st.lists(st.sampled_from(names), min_size=0, max_size=3))))
            for _ in range(draw(st.integers(0, 12))))
        esps.append(EspUsage(f"ESP-{k}", 1000, draw(st.integers(0, 300)), files))
    return snaps, bes, tuple(esps)


be_policies = st.builds(
    Policy,
    keep=st.integers(1, 5),
    keep_important=st.integers(0, 3),
    pool_min_free=st.one_of(st.builds(Floor, bytes=st.integers(0, 1500)),
                            st.builds(Floor, percent=st.floats(0, 100, allow_nan=False))),
    esp_min_free=st.one_of(st.builds(Floor, bytes=st.integers(0, 400)),
                           st.builds(Floor, percent=st.floats(0, 40, allow_nan=False))),
)
World = tuple[list[Snap], list[Be], "tuple[EspUsage, ...] | None"]


def be_model(snaps: list[Snap], bes: list[Be], space: Space,
             esps: tuple[EspUsage, ...] | None, policy: Policy) -> set[str]:
    """Which BEs go, the slow way, without decide_all's code."""
    def newer(a: Be, b: Be) -> bool:
        return (a.createtxg, a.name) > (b.createtxg, b.name)

    pinned_snap = {s.be for s in snaps if s.pinned}
    cand = [b for b in bes if b.auto and not b.held and not b.pinned
            and b.name not in pinned_snap]
    go = {b.name for b in cand if b.failed}
    rot = [b for b in cand if not b.failed]
    for b in rot:
        rank = sum(1 for o in rot if newer(o, b))
        irank = sum(1 for o in rot if o.important and newer(o, b))
        if not (rank < policy.keep or (b.important and irank < policy.keep_important)):
            go.add(b.name)
    order = sorted(rot, key=lambda b: (bool(b.important), b.createtxg, b.name))
    may = {b.name for b in cand}
    def free(esp: EspUsage) -> int:
        return esp.free + sum(n for n, refs in esp.files if refs and refs <= go)

    for esp in esps or ():
        while free(esp) < policy.esp_min_free.of(esp.size):
            useful = [b for b in order if b.name not in go and any(
                b.name in refs and refs <= may and not refs <= go for _, refs in esp.files)]
            if not useful:
                break
            go.add(useful[0].name)
    return go


def pool_after(snaps: list[Snap], bes: list[Be], space: Space, d: Decisions) -> int:
    gone_bes = {x.be.name for x in d.bes if x.destroy}
    used = {b.name: b.used for b in bes}
    return (space.free + sum(used[n] for n in gone_bes)
            + sum(x.snap.used for x in d.snaps if x.destroy and x.snap.be not in gone_bes))


@settings(max_examples=400)
@given(worlds(), spaces, be_policies)
def test_bes_never_protected_floors_override_counts(world: World, space: Space,
                                                    policy: Policy) -> None:
    snaps, bes, esps = world
    d = decide_all(snaps, bes, space, esps, policy)
    by_name = {b.name: b for b in bes}
    went = {x.be.name for x in d.bes if x.destroy}
    # one decision per automatic BE, none for the others, each with a reason
    assert sorted(x.be.name for x in d.bes) == sorted(b.name for b in bes if b.auto)
    assert all(x.reason for x in d.bes)
    pinned_snap = {s.be for s in snaps if s.pinned}
    for name in went:
        b = by_name[name]
        assert b.auto and not b.held and not b.pinned and name not in pinned_snap
    # a snapshot that goes is automatic, never pinned nor an origin
    for x in d.snaps:
        if x.destroy:
            assert x.snap.auto and not x.snap.pinned and not x.snap.clones
    # counts and the ESP floor as the model decides them; the pool floor may add more
    model_go = be_model(snaps, bes, space, esps, policy)
    assert model_go <= went
    # what the pool floor added beyond the model is only pool-floor work
    for x in d.bes:
        if x.destroy and x.be.name not in model_go:
            assert x.reason.startswith("pool free space below the floor")
    # every ESP meets its floor, or no candidate left frees anything more on it
    cand = {b.name for b in bes if b.auto and not b.held and not b.pinned
            and b.name not in pinned_snap}
    for esp in esps or ():
        after = esp_free_after(esp, went)
        if after < policy.esp_min_free.of(esp.size):
            assert not [refs for _, refs in esp.files
                        if refs and refs <= cand and not refs <= went]
    # the pool meets its floor, or every candidate goes
    snap_cand = {s.name for s in snaps if s.auto and not s.pinned and not s.clones}
    if pool_after(snaps, bes, space, d) < policy.pool_min_free.of(space.size):
        assert cand <= went
        assert all(x.destroy for x in d.snaps if x.snap.name in snap_cand)


@settings(max_examples=300)
@given(worlds(), spaces, be_policies)
def test_bes_pruning_twice_removes_nothing_more(world: World, space: Space,
                                                policy: Policy) -> None:
    snaps, bes, esps = world
    d = decide_all(snaps, bes, space, esps, policy)
    went = {x.be.name for x in d.bes if x.destroy}
    gone_snaps = {x.snap.name for x in d.snaps if x.destroy}
    freed = pool_after(snaps, bes, space, d) - space.free
    left_bes = [b for b in bes if b.name not in went]
    left_snaps = [s for s in snaps if s.name not in gone_snaps and s.be not in went]
    left_esps = None if esps is None else tuple(
        EspUsage(e.uuid, e.size, esp_free_after(e, went),
                 tuple((n, r) for n, r in e.files if not (r and r <= went)))
        for e in esps)
    again = decide_all(left_snaps, left_bes, Space(space.free + freed, space.size),
                       left_esps, policy)
    assert not any(x.destroy for x in again.bes)
    assert not any(x.destroy for x in again.snaps)


@given(worlds(), spaces, be_policies, st.randoms())
def test_bes_input_order_does_not_matter(world: World, space: Space, policy: Policy,
                                         rnd: random.Random) -> None:
    snaps, bes, esps = world
    s2, b2 = list(snaps), list(bes)
    rnd.shuffle(s2)
    rnd.shuffle(b2)
    assert decide_all(s2, b2, space, esps, policy) == decide_all(snaps, bes, space, esps,
                                                                  policy)


def test_be_examples() -> None:
    def b(i: int, **kw: object) -> Be:
        return Be(name=f"u{i}", created=i, createtxg=i, used=10, auto=True,
                  **kw)  # type: ignore[arg-type]

    bes = [b(1, important="kernel"), b(2), b(3), b(4, pinned=True), b(5, held="boots next (R)"),
           b(6, failed=True), b(7), Be("mine", 0, 0, 10, auto=False)]
    # ESP: u2 and u3 share a kernel (40); u7 has its own (30); Proxmox's file (50)
    esp = EspUsage("1111-AAAA", 1000, 100, (
        (40, frozenset({"u2", "u3"})), (30, frozenset({"u7"})), (4, frozenset({"u2"})),
        (50, frozenset({"(entry proxmox-6.8.conf)"})), (20, frozenset())))
    roomy = Space(free=900, size=1000)
    d = {x.be.name: x for x in decide_all([], bes, roomy, (esp,),
                                          Policy(keep=2, keep_important=1,
                                                 esp_min_free=Floor(bytes=100))).bes}
    assert "mine" not in d
    assert [n for n, x in d.items() if x.destroy] == ["u6", "u2"]  # newest first
    assert d["u6"].reason == "its upgrade failed: it boots nothing"
    assert d["u5"].reason == "boots next (R)" and d["u4"].reason == "pinned (org.beadm:keep)"
    assert d["u1"].reason == "important (kernel): one of the newest 1 important"
    assert d["u2"].reason == "older than the newest 2"  # u7, u3 are; held ones not counted
    # below the ESP floor: the oldest ordinary one that holds something there goes first;
    # u2 alone frees its entry (4), with u3 the shared kernel (40)
    tight = decide_all([], bes, roomy, (esp,), Policy(keep=5, keep_important=1,
                                                      esp_min_free=Floor(bytes=140)))
    went = [x.be.name for x in tight.bes if x.destroy]
    assert sorted(went) == ["u2", "u3", "u6"]
    assert {x.be.name: x.reason for x in tight.bes}["u2"] == \
        "ESP 1111-AAAA free space below the floor (140 bytes)"
    # the snapshots of a BE that goes go with it, but an origin of a clone
    s_auto = Snap("rpool/ROOT/u6@beadm-auto-1", "u6", 1, 1, 5, True)
    s_origin = Snap("rpool/ROOT/u6@beadm-auto-2", "u6", 2, 2, 5, True, clones=("r/ROOT/z",))
    snaps = {x.snap.name: x for x in decide_all([s_auto, s_origin], bes, roomy, None,
                                                Policy(keep=5)).snaps}
    assert snaps[s_auto.name].destroy and snaps[s_auto.name].reason == "goes with its BE u6"
    assert not snaps[s_origin.name].destroy
    # a pinned snapshot holds its BE
    pin = Snap("rpool/ROOT/u6@mine", "u6", 3, 3, 5, False, pinned=True)
    held = {x.be.name: x for x in decide_all([pin], bes, roomy, None, Policy(keep=5)).bes}
    assert not held["u6"].destroy and held["u6"].reason == "holds the pinned snapshot " \
        "rpool/ROOT/u6@mine"


def test_rank_by_createtxg_not_by_the_clock() -> None:
    # the clock went back (an RTC reset, NTP correcting a fast clock): the newest snapshot
    # and the newest BE carry the oldest creation time; the pool's txg order is the truth
    snaps = [Snap(name=f"r/ROOT/a@beadm-auto-{i}", be="a", created=2_000_000_000 - i,
                  createtxg=100 + i, used=10, auto=True) for i in range(4)]
    d = decide(snaps, Space(free=900, size=1000), Policy(keep=2, keep_important=0))
    assert [x.snap.createtxg for x in d] == [103, 102, 101, 100]  # newest first
    assert {x.snap.createtxg for x in d if x.destroy} == {100, 101}
    bes = [Be(name=f"u{i}", created=2_000_000_000 - i, createtxg=100 + i, used=10, auto=True)
           for i in range(4)]
    bd = decide_all([], bes, Space(free=900, size=1000), None,
                    Policy(keep=2, keep_important=0)).bes
    assert [(x.be.name, x.destroy) for x in bd] == [
        ("u3", False), ("u2", False), ("u1", True), ("u0", True)]
    # the floors take the oldest by txg too
    tight = decide(snaps, Space(free=0, size=1000),
                   Policy(keep=4, keep_important=0, pool_min_free=Floor(bytes=10)))
    assert {x.snap.createtxg for x in tight if x.destroy} == {100}
