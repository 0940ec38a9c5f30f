from __future__ import annotations

import logging
from pathlib import Path

import pytest

from beadm.backend import BootState
from beadm.errors import NotFoundError, RefusedError
from worlds.fakes import RecordingBackend
from worlds.pool import manager, row

S1 = "beadm-20261101-000000"
S2 = "beadm-20261102-000000"
R = "rpool/ROOT"
RUNNING_CUR = f"1 0 0:1 / / rw - zfs {R}/cur rw\n"


def chain() -> str:
    """old has two snapshots, each the origin of another BE (a from S1, b from S2)."""
    return "".join(
        [
            row(R, canmount="off"),
            row(f"{R}/cur", mountpoint="/", mounted="yes", canmount="on"),
            row(f"{R}/old", mountpoint="/"),
            row(f"{R}/old@{S1}", createtxg="10", clones=f"{R}/a"),
            row(f"{R}/old@keep", createtxg="15"),
            row(f"{R}/old@{S2}", createtxg="20", clones=f"{R}/b"),
            row(f"{R}/old/var", mountpoint="/var"),
            row(f"{R}/old/var@{S1}", createtxg="10", clones=f"{R}/a/var"),
            row(f"{R}/old/var@{S2}", createtxg="20", clones=f"{R}/b/var"),
            row(f"{R}/a", origin=f"{R}/old@{S1}", mountpoint="/"),
            row(f"{R}/a/var", origin=f"{R}/old/var@{S1}", mountpoint="/var"),
            row(f"{R}/b", origin=f"{R}/old@{S2}", mountpoint="/"),
            row(f"{R}/b/var", origin=f"{R}/old/var@{S2}", mountpoint="/var"),
        ]
    )


def test_destroy_promotes_dependents_then_removes_origin(tmp_path: Path) -> None:
    mgr, runner, backend = manager(
        tmp_path, listing=chain(), mountinfo=RUNNING_CUR, bootfs=f"{R}/cur"
    )
    mgr.destroy("old")
    assert runner.changes == [
        ("zfs", "promote", f"{R}/a"),
        ("zfs", "promote", f"{R}/b"),
        ("zfs", "promote", f"{R}/a/var"),
        ("zfs", "promote", f"{R}/b/var"),
        ("zfs", "destroy", "-r", f"{R}/old"),
        ("zfs", "destroy", f"{R}/b@{S2}"),
        ("zfs", "destroy", f"{R}/b/var@{S2}"),
    ]
    assert [c[0] for c in backend.calls] == ["post_destroy"]


def test_destroy_removes_beadm_origin_only(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path, listing=chain(), mountinfo=RUNNING_CUR, bootfs=f"{R}/cur")
    mgr.destroy("a")
    # a's origin old@S1 has no other clone and is beadm's: removed
    assert runner.changes == [
        ("zfs", "destroy", "-r", f"{R}/a"),
        ("zfs", "destroy", f"{R}/old@{S1}"),
        ("zfs", "destroy", f"{R}/old/var@{S1}"),
    ]


def test_destroy_keeps_foreign_origin_unless_o(tmp_path: Path) -> None:
    listing = chain() + row(f"{R}/c", origin=f"{R}/old@keep")
    listing = listing.replace(f"{R}/old@keep\tsnapshot", f"{R}/old@keep\tsnapshot")
    lines = [
        ln if not ln.startswith(f"{R}/old@keep\t") else row(f"{R}/old@keep", clones=f"{R}/c")
        for ln in listing.splitlines(keepends=True)
    ]
    mgr, runner, _ = manager(tmp_path, listing="".join(lines), mountinfo=RUNNING_CUR)
    mgr.destroy("c")
    assert runner.changes == [("zfs", "destroy", "-r", f"{R}/c")]
    mgr2, runner2, _ = manager(tmp_path, listing="".join(lines), mountinfo=RUNNING_CUR)
    mgr2.destroy("c", origin=True)
    assert runner2.changes[-1] == ("zfs", "destroy", f"{R}/old@keep")


@pytest.mark.parametrize(
    ("bootfs", "state", "name"),
    [
        (f"{R}/cur", BootState(), "cur"),  # running
        (f"{R}/a", BootState(), "a"),  # bootfs
        (f"{R}/cur", BootState(next_boot="b"), "b"),  # backend R
        (f"{R}/cur", BootState(once="a"), "a"),  # backend T
    ],
)
def test_destroy_refusals(tmp_path: Path, bootfs: str, state: BootState, name: str) -> None:
    mgr, runner, _ = manager(
        tmp_path,
        listing=chain(),
        mountinfo=RUNNING_CUR,
        bootfs=bootfs,
        backend=RecordingBackend(state=state),
    )
    with pytest.raises(RefusedError):
        mgr.destroy_check(name)
    with pytest.raises(RefusedError):
        mgr.destroy(name)
    assert runner.changes == []


def test_destroy_snapshot_with_clones_refused(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path, listing=chain(), mountinfo=RUNNING_CUR)
    with pytest.raises(RefusedError, match="has clones"):
        mgr.destroy(f"old@{S1}")
    with pytest.raises(NotFoundError):
        mgr.destroy("old@nope")
    mgr.destroy("old@keep")
    assert runner.changes == [("zfs", "destroy", "-r", f"{R}/old@keep")]


def test_destroy_test_leaves_test2_alone(tmp_path: Path) -> None:
    listing = "".join(
        [
            row(R, canmount="off"),
            row(f"{R}/cur", mountpoint="/", mounted="yes"),
            row(f"{R}/test"),
            row(f"{R}/test/var"),
            row(f"{R}/test@x"),
            row(f"{R}/test2"),
            row(f"{R}/test2/var"),
            row(f"{R}/test2@x"),
            row(f"{R}/test.2"),
        ]
    )
    mgr, runner, _ = manager(tmp_path, listing=listing, mountinfo=RUNNING_CUR, bootfs=f"{R}/cur")
    mgr.destroy("test")
    assert runner.changes == [("zfs", "destroy", "-r", f"{R}/test")]


def test_destroy_unmounts_a_mounted_be_first(tmp_path: Path) -> None:
    mi = RUNNING_CUR + f"2 1 0:2 / /tmp/beadm-x rw - zfs {R}/a rw\n"
    mi += f"3 2 0:3 / /tmp/beadm-x/var rw - zfs {R}/a/var rw\n"
    mgr, runner, _ = manager(tmp_path, listing=chain(), mountinfo=mi, bootfs=f"{R}/cur")
    mgr.destroy("a")
    assert runner.changes[:2] == [("umount", "/tmp/beadm-x/var"), ("umount", "/tmp/beadm-x")]


def test_stale_half_created_be_is_removed_by_next_command(tmp_path: Path) -> None:
    listing = "".join(
        [
            row(R, canmount="off"),
            row(f"{R}/cur", mountpoint="/", mounted="yes", canmount="on"),
            row(f"{R}/cur@{S1}", clones=f"{R}/half", state="creating"),
            row(f"{R}/cur/var"),
            row(f"{R}/cur/var@{S1}", state="creating"),
            row(f"{R}/half", origin=f"{R}/cur@{S1}", state="creating"),
        ]
    )
    mgr, runner, backend = manager(tmp_path, listing=listing, mountinfo=RUNNING_CUR)
    mgr.activate("cur")
    assert runner.changes[:3] == [
        ("zfs", "destroy", "-r", f"{R}/half"),
        ("zfs", "destroy", f"{R}/cur@{S1}"),
        ("zfs", "destroy", f"{R}/cur/var@{S1}"),
    ]
    assert backend.calls[0][0] == "post_destroy"
    assert backend.calls[-1][0] == "activate"


def test_stale_snapshot_with_live_clone_only_loses_its_mark(tmp_path: Path) -> None:
    listing = "".join(
        [
            row(R, canmount="off"),
            row(f"{R}/cur", mountpoint="/", mounted="yes"),
            row(f"{R}/cur@{S1}", clones=f"{R}/done", state="creating"),
            row(f"{R}/done", origin=f"{R}/cur@{S1}"),
        ]
    )
    mgr, runner, _ = manager(tmp_path, listing=listing, mountinfo=RUNNING_CUR, bootfs=f"{R}/cur")
    mgr.activate("cur")
    assert runner.changes[0] == ("zfs", "inherit", "org.beadm:state", f"{R}/cur@{S1}")


def _stale_world() -> str:
    return "".join([
        row(R, canmount="off"),
        row(f"{R}/cur", mountpoint="/", mounted="yes", canmount="on"),
        row(f"{R}/cur@{S1}", clones=f"{R}/half", state="creating"),
        row(f"{R}/half", origin=f"{R}/cur@{S1}", state="destroying"),
        row(f"{R}/up", mountpoint="/", state="upgrading"),
        row(f"{R}/new", mountpoint="/", state="renaming:old"),
        row(f"{R}/other", mountpoint="/", description="d"),
    ])  # fmt: skip


@pytest.mark.parametrize("command", ["sync-if-used", "sync", "activate", "destroy", "prune"])
def test_stale_state_that_cannot_be_cleaned_never_fails_an_unrelated_command(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, command: str) -> None:
    """Every stale mark's clean-up fails here (a BE half-destroyed that is still busy, a
    half-created snapshot held, the mark of a killed upgrade, the backend finishing a
    killed rename): each is a warning, and the command does its own work."""
    from beadm.retention import Policy

    mgr, runner, backend = manager(tmp_path, listing=_stale_world(), mountinfo=RUNNING_CUR,
                                   backend=RecordingBackend(fail_on="post_rename"))
    runner.fail("zfs", "destroy", "-r", f"{R}/half", stderr="dataset is busy")
    runner.fail("zfs", "set", "org.beadm:state=failed", stderr="permission denied")
    runner.on("zfs", "get", "-H", "-p", "-t", stdout="")
    runner.on("zfs", "get", "-H", "-p", "-o", "value", "used,available",
              stdout="100000\n900000\n")
    with caplog.at_level(logging.WARNING, logger="beadm"):
        if command == "sync-if-used":
            mgr.sync(only_if_used=True)
        elif command == "sync":
            mgr.sync()
        elif command == "activate":
            mgr.activate("other")
        elif command == "destroy":
            mgr.destroy("other")
        else:
            mgr.prune(Policy())
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("half" in w and "busy" in w for w in warned), warned
    assert any("up" in w and "permission denied" in w for w in warned), warned
    assert any("post_rename failed" in w for w in warned), warned
    done = {"sync-if-used": "sync", "sync": "sync", "activate": "activate",
            "destroy": "post_destroy"}
    if command in done:
        assert backend.calls[-1][0] == done[command]
    if command == "destroy":
        assert ("zfs", "destroy", "-r", f"{R}/other") in runner.changes
    if command == "activate":
        assert ("zpool", "set", f"bootfs={R}/other", "rpool") in runner.changes
    # the stale ones are listed with their state
    states = {i.be.name: i.state for i in mgr.listing().bes}
    assert states["half"] == "destroying" and states["new"] == "renaming"


def test_a_half_destroyed_be_cannot_be_activated(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path, listing=_stale_world(), mountinfo=RUNNING_CUR)
    runner.fail("zfs", "destroy", "-r", f"{R}/half", stderr="dataset is busy")
    with pytest.raises(RefusedError, match="half-destroyed"):
        mgr.activate("half")
    assert not [c for c in runner.changes if c[:2] == ("zpool", "set")]
