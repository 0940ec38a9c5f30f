"""Issue 12.2: a BE cloned from a snapshot taken before ``init --shared-state`` gets the
shared-state drop-ins at ``create`` (and at ``activate`` if it lacks them), and one warning
that its own copy of the moved state is not used.

The pool's listing has ``rpool/var-lib-pve-cluster`` in service. Mounting a BE root on a
temporary directory (``mount -t zfs``) is faked by replacing the directory with a symlink to
the BE's files in ``tmp/be/<name>``; ``umount`` puts the empty directory back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from beadm import pvestate, statedropins
from beadm.backend import BeRef
from beadm.errors import CommandError
from beadm.zfs import parse_list
from worlds.fakes import FakeRunner
from worlds.pool import LIST_ARGV, LIST_FS_ARGV, LIST_TEXT, manager, row, without_snapshots

PC = "/var/lib/pve-cluster"
DROPIN = Path("etc/systemd/system/pve-cluster.service.d") / statedropins.DROPIN_NAME
COROSYNC_DROPIN = Path("etc/systemd/system/corosync.service.d") / statedropins.DROPIN_NAME
SHARED_PC = row("rpool/var-lib-pve-cluster", mountpoint=PC, canmount="on", mounted="yes")
POOL_ARGV = (*LIST_FS_ARGV, "-d", "1", "rpool")
POOL_TOP = row("rpool", mountpoint="/rpool", canmount="on") + row(
    "rpool/ROOT", mountpoint="/rpool/ROOT", canmount="off")


class FakeBes:
    """BE files in ``tmp/be/<dataset>``; ``mount -t zfs ... DS DIR`` shows them at DIR."""

    def __init__(self, tmp: Path, runner: FakeRunner) -> None:
        self.top = tmp / "be"
        self.mounted: list[tuple[str, str]] = []
        runner.on("mount", "-t", "zfs", hook=self._mount)
        runner.on("umount", hook=self._umount)

    def files(self, dataset: str) -> Path:
        p = self.top / dataset.replace("/", "_")
        p.mkdir(parents=True, exist_ok=True)
        return p

    def _mount(self, argv: tuple[str, ...]) -> None:
        target = Path(argv[-1])
        assert target.is_dir() and not any(target.iterdir())
        target.rmdir()
        target.symlink_to(self.files(argv[-2]))
        self.mounted.append((argv[-2], argv[-1]))

    def _umount(self, argv: tuple[str, ...]) -> None:
        target = Path(argv[-1])
        target.unlink()
        target.mkdir()
        self.mounted = [m for m in self.mounted if m[1] != argv[-1]]


def old_be(bes: FakeBes, dataset: str) -> Path:
    """A BE as a snapshot from before the move left it: its own config.db, no drop-in."""
    root = bes.files(dataset)
    (root / PC.lstrip("/")).mkdir(parents=True)
    (root / PC.lstrip("/") / "config.db").write_bytes(b"SQLite format 3\x00old")
    return root


def setup(tmp_path: Path, *, shared: str = SHARED_PC, dry_run: bool = False):  # type: ignore[no-untyped-def]
    runner = FakeRunner(dry_run=dry_run)
    runner.on(*POOL_ARGV, stdout=POOL_TOP + shared)
    bes = FakeBes(tmp_path, runner)
    mgr, runner, backend = manager(tmp_path, runner=runner)
    mgr._out = runner.out
    return mgr, runner, backend, bes


# -- pure parts ------------------------------------------------------------------------------


def test_in_use_only_a_finished_shared_dataset_at_its_path() -> None:
    rows = (row("rpool/var-lib-vz", mountpoint="/var/lib/vz", canmount="on")
            + row("rpool/var-lib-pve-cluster", mountpoint=PC, canmount="on")
            + row("rpool/etc-corosync", mountpoint="/etc/corosync", canmount="noauto",
                  state="moving")
            + row("rpool/var-lib-pve-manager", mountpoint="/elsewhere", canmount="on"))
    assert pvestate.in_use(parse_list(rows), "rpool") == ["/var/lib/vz", PC]
    moving = row("rpool/var-lib-pve-cluster", mountpoint=PC, canmount="on", state="removing")
    assert pvestate.in_use(parse_list(moving), "rpool") == []
    alt = row("rpool/var-lib-pve-cluster", mountpoint="/mnt/x" + PC, canmount="on")
    assert pvestate.in_use(parse_list(alt), "rpool") == []
    assert pvestate.in_use(parse_list(alt), "rpool", altroot="/mnt/x") == [PC]


def test_prepare_be_writes_what_is_missing_once_and_reports_the_hidden_copy(
        tmp_path: Path) -> None:
    runner = FakeRunner()
    bes = FakeBes(tmp_path, runner)
    root = old_be(bes, "rpool/ROOT/old")
    mi = tmp_path / "mountinfo"
    mi.write_text("")
    (tmp_path / "t").mkdir()
    done = statedropins.prepare_be(runner, "rpool/ROOT/old", [PC, "/etc/corosync"],
                               mountinfo=mi, tmpdir=str(tmp_path / "t"), out=runner.out)
    assert done.hidden == (PC,)
    assert sorted(p.name for p in done.written) == [statedropins.DROPIN_NAME] * 2
    text = (root / DROPIN).read_text()
    assert f"RequiresMountsFor={PC}\n" in text and "RequiresMountsFor=/etc/corosync" in text
    assert "AssertPathIsMountPoint=/etc/corosync" in (root / COROSYNC_DROPIN).read_text()
    assert [c[:2] for c in runner.changes] == [("mount", "-t"), ("umount",
                                                                 runner.changes[1][1])]
    assert bes.mounted == [] and list((tmp_path / "t").iterdir()) == []
    again = statedropins.prepare_be(runner, "rpool/ROOT/old", [PC, "/etc/corosync"],
                                mountinfo=mi, tmpdir=str(tmp_path / "t"), out=runner.out)
    assert again.written == () and again.hidden == (PC,)


def test_prepare_be_dry_run_looks_read_only_and_writes_nothing(tmp_path: Path) -> None:
    runner = FakeRunner(dry_run=True)
    bes = FakeBes(tmp_path, runner)
    root = old_be(bes, "rpool/ROOT/old")
    mi = tmp_path / "mountinfo"
    mi.write_text("")
    done = statedropins.prepare_be(runner, "rpool/ROOT/old", [PC], mountinfo=mi,
                               tmpdir=str(tmp_path), out=runner.out)
    assert runner.changes == []
    assert runner.calls[0][:5] == ("mount", "-t", "zfs", "-o", "ro,zfsutil")
    assert not (root / DROPIN).exists()
    assert len(done.written) == 1
    assert f"would write {done.written[0]}" in runner.out.getvalue()


def test_prepare_be_running_be_is_written_in_place_without_a_mount(tmp_path: Path) -> None:
    runner = FakeRunner()
    mi = tmp_path / "mountinfo"
    mi.write_text("22 1 0:21 / / rw - zfs rpool/ROOT/pve-1 rw\n")
    live = tmp_path / "live"
    (live / PC.lstrip("/")).mkdir(parents=True)
    (live / PC.lstrip("/") / "config.db").write_text("the shared one, mounted over it")
    done = statedropins.prepare_be(runner, "rpool/ROOT/pve-1", [PC], mountinfo=mi,
                               root_dir=str(live), out=runner.out)
    assert runner.calls == []
    assert (live / DROPIN).is_file()
    assert done.hidden == ()  # what is at the path of the running BE is the shared dataset


# -- create and activate ---------------------------------------------------------------------


def test_create_from_a_snapshot_before_the_move_gets_the_dropins_while_still_marked(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mgr, runner, backend, bes = setup(tmp_path)
    root = old_be(bes, "rpool/ROOT/pve-3")
    with caplog.at_level(logging.WARNING, logger="beadm"):
        ref = mgr.create("pve-3", source="pve-1@beadm-20261120-101010").be
    assert ref == BeRef("pve-3", "rpool/ROOT/pve-3", "", False)
    assert f"RequiresMountsFor={PC}" in (root / DROPIN).read_text()
    heads = [c[:3] if c[0] == "zfs" else c[:1] for c in runner.changes]
    # clones, then the drop-in (mount, write, umount), then the marks cleared
    assert heads == [("zfs", "clone", "-o"), ("zfs", "clone", "-o"), ("mount",), ("umount",),
                     ("zfs", "inherit", "org.beadm:state")]
    assert runner.changes[-1][3:] == ("rpool/ROOT/pve-3", "rpool/ROOT/pve-3/var")
    assert runner.changes[2][-2] == "rpool/ROOT/pve-3"
    assert backend.calls == [("post_create", ref)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"warning: BE pve-3 keeps its own {PC} from before the shared-state "
                        "move: not used (the shared datasets are mounted over it at boot)"]

    # activate finds them: nothing written, no second warning
    caplog.clear()
    listing = LIST_TEXT + row("rpool/ROOT/pve-3", mountpoint="/", canmount="noauto")
    runner.on(*LIST_FS_ARGV, stdout=without_snapshots(listing))
    runner.on(*LIST_ARGV, stdout=listing)
    runner.changes.clear()
    with caplog.at_level(logging.WARNING, logger="beadm"):
        mgr.activate("pve-3")
    assert [c[0] for c in runner.changes].count("mount") == 1  # the look, no write
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []


def test_create_fails_at_the_dropins_and_nothing_is_left(tmp_path: Path) -> None:
    mgr, runner, backend, _bes = setup(tmp_path)
    runner.fail("mount", "-t", "zfs", stderr="cannot mount")
    with pytest.raises(CommandError, match="cannot mount"):
        mgr.create("pve-3", source="pve-1@beadm-20261120-101010")
    destroyed = [c[-1] for c in runner.changes if c[:2] == ("zfs", "destroy")]
    assert destroyed == ["rpool/ROOT/pve-3/var", "rpool/ROOT/pve-3"]
    assert backend.calls == []


def test_create_from_the_running_be_after_the_move_writes_and_warns_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mgr, _runner, _backend, bes = setup(tmp_path)
    root = bes.files("rpool/ROOT/pve-3")  # the clone: drop-in cloned, own directory empty
    (root / DROPIN).parent.mkdir(parents=True)
    (root / DROPIN).write_text(statedropins.dropin_text([PC]))
    (root / PC.lstrip("/")).mkdir(parents=True)
    before = (root / DROPIN).stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="beadm"):
        mgr.create("pve-3")
    assert (root / DROPIN).stat().st_mtime_ns == before
    assert caplog.records == []


def test_create_without_shared_state_does_not_look(tmp_path: Path) -> None:
    mgr, runner, _, _bes = setup(tmp_path, shared="")
    mgr.create("pve-3")
    assert not any(c[0] == "mount" for c in runner.calls)


def test_create_dry_run_says_it_would_write_them(tmp_path: Path) -> None:
    mgr, runner, _, _ = setup(tmp_path, dry_run=True)
    mgr.create("pve-3", source="pve-1@beadm-20261120-101010")
    assert runner.changes == []
    assert ("would write the shared-state drop-ins into rpool/ROOT/pve-3 where missing "
            f"({PC} are shared datasets)") in runner.out.getvalue().splitlines()


def test_activate_writes_them_into_a_be_that_lacks_them_and_warns_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mgr, runner, _backend, bes = setup(tmp_path)
    root = old_be(bes, "rpool/ROOT/pve-2")
    with caplog.at_level(logging.WARNING, logger="beadm"):
        mgr.activate("pve-2")
        mgr.activate("pve-2")
    assert f"RequiresMountsFor={PC}" in (root / DROPIN).read_text()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    first_mount = next(i for i, c in enumerate(runner.changes) if c[0] == "mount")
    bootfs = runner.changes.index(("zpool", "set", "bootfs=rpool/ROOT/pve-2", "rpool"))
    assert first_mount < bootfs  # the drop-in is there before the BE can boot


def test_activate_dry_run_writes_nothing(tmp_path: Path) -> None:
    mgr, runner, _, bes = setup(tmp_path, dry_run=True)
    root = old_be(bes, "rpool/ROOT/pve-2")
    snapshot = sorted(str(p) for p in bes.top.rglob("*"))
    mgr.activate("pve-2")
    assert runner.changes == []
    assert not (root / DROPIN).exists()
    said = runner.out.getvalue()
    assert "would write /" in said and f"/{DROPIN}\n" in said
    assert sorted(str(p) for p in bes.top.rglob("*")) == snapshot
