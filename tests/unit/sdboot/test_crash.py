"""Crash order: kill the backend before each change it makes, on each ESP.

After the kill, on every ESP the loader must still boot either the previous next-boot BE
or the new one, from an entry whose files all exist, and the running BE must still have
a complete entry; the next command (sync, as the hooks and ``beadm sync`` run it) must
leave no drift.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from beadm.esp import entries as ent
from beadm.esp.store import EspStore
from beadm.sdboot import resolve
from worlds.sdboot import K2, UUIDS, World


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the backend catches it."""


def prepared(tmp: Path) -> World:
    w = World(tmp)
    w.backend.init(w.ref("pve-1"))
    w.add_be("pve-2", clone_of="pve-1")
    w.backend.post_create(w.ref("pve-2"))
    w.add_be("old", {"6.1.0-1-pve": b"old"})
    w.backend.post_create(w.ref("old"))
    w.backend.activate(w.ref("pve-1"), temporary=False)
    return w


def running_entry_complete(w: World, uuid: str) -> bool:
    st = EspStore(w.esps[uuid], uuid)
    ok = resolve.usable(st.root, st.entry_files())
    return any(e.be == "pve-1" for e in ok.values())


def kernel_update(w: World) -> None:
    root = w.bes["rpool/ROOT/pve-1"]
    (root / "boot/vmlinuz-6.9.0-1-pve").write_bytes(b"v9")
    (root / "boot/initrd.img-6.9.0-1-pve").write_bytes(b"i9")
    w.backend.sync(w.refs())


def rename(w: World) -> None:
    w.rename_be("pve-2", "renamed")
    w.backend.post_rename(w.ref("pve-2"), w.ref("renamed"))


def create(w: World) -> None:
    w.add_be("pve-3", clone_of="pve-2")
    w.backend.post_create(w.ref("pve-3"))


def destroy(w: World) -> None:
    del w.bes["rpool/ROOT/old"]
    w.backend.post_destroy(w.ref("old"))


OPS: dict[str, tuple[Callable[[World], None], set[str]]] = {
    "activate": (lambda w: w.backend.activate(w.ref("pve-2"), temporary=False),
                 {"pve-1", "pve-2"}),
    "create": (create, {"pve-1"}),
    "destroy": (destroy, {"pve-1"}),
    "rename": (rename, {"pve-1"}),
    "kernel-update+sync": (kernel_update, {"pve-1"}),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_killed_at_every_step(tmp_path: Path, op: str) -> None:
    fn, allowed = OPS[op]
    k = 0
    while True:
        w = prepared(tmp_path / f"run{k}")
        steps: list[str] = []

        def step(what: str, steps: list[str] = steps, k: int = k) -> None:
            if len(steps) == k:
                raise Killed(what)
            steps.append(what)

        w.host.step = step
        try:
            fn(w)
        except Killed:
            pass
        else:
            break  # ran to the end: every kill point was covered
        finally:
            w.host.step = None
        for u in UUIDS:
            assert w.booted(u) in allowed, (op, k, steps)
            assert running_entry_complete(w, u), (op, k, steps)
        # the next command cleans up the half-done change
        if op == "rename" and "rpool/ROOT/renamed" in w.bes:
            w.backend.post_rename(w.ref("pve-2"), w.ref("renamed"))  # re-run: idempotent
        w.backend.sync(w.refs())
        assert w.backend.check(w.refs()).problems == (), (op, k, steps)
        k += 1
        assert k < 200
    assert k > 0, f"{op} made no change on the ESPs"


def test_activate_order_entries_then_default_then_gc(tmp_path: Path) -> None:
    w = prepared(tmp_path)
    w.add_be("pve-3", {"6.9.0-1-pve": b"new"}, clone_of="pve-2")  # not yet on the ESPs
    seen: list[str] = []
    w.host.step = seen.append
    w.backend.activate(w.ref("pve-3"), temporary=False)
    assert seen, "activate changed nothing on the ESPs"
    firsts = [s for s in seen if "loader.conf" in s]
    assert len(firsts) == len(UUIDS)
    # every loader.conf write comes after every entry/file write
    writes = [i for i, s in enumerate(seen) if s.startswith("rename loader/entries/")]
    files = [i for i, s in enumerate(seen) if s.startswith("rename beadm/")]
    gcs = [i for i, s in enumerate(seen) if s.startswith("unlink")]
    assert files and writes
    confs = [seen.index(f) for f in firsts]
    assert max(files) < max(writes) < min(confs)
    assert not gcs or min(gcs) > max(confs)
    assert f"rename loader/entries/{ent.entry_filename('pve-3', K2)}" in seen
