"""Automatic BEs in prune: the executor (exact zfs argv and backend calls against the fake
runner), the protections it computes, the ESP floor with the backend's ``esp_usage``
(the systemd-boot one over directories), and the CLI's output."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from beadm import be as be_mod
from beadm.backend import BeRef, BootState, EspUsage
from beadm.be import BeManager
from beadm.cli import Deps, main
from beadm.detect import GuardedBackend
from beadm.esp import room
from beadm.grub.backend import GrubBackend
from beadm.retention import Floor, Policy
from beadm.sdboot.backend import SystemdBootBackend
from worlds.fakes import FakeRunner, RecordingBackend, WarningBackend, pool_props
from worlds.grub import UUIDS as GRUB_UUIDS
from worlds.grub import GrubWorld
from worlds.pool import GET_TEXT, LIST_ARGV, LIST_FS_ARGV, LIST_TEXT, MOUNTINFO, manager, row
from worlds.sdboot import K1, UUIDS, World

PROPS_ARGV = ("zfs", "get", "-H", "-p", "-t", "filesystem,snapshot")
SPACE_ARGV = ("zfs", "get", "-H", "-p", "-o", "value", "used,available", "rpool")


def ube(name: str, n: int, *, state: str = "-", clones: str = "") -> str:
    """BE ``name`` as ``beadm upgrade`` makes it: a clone of pve-1@beadm-..., created at
    ``n`` (older first), with its origin snapshot."""
    snap = f"rpool/ROOT/pve-1@beadm-2026112{n}-120000"
    created = str(1763700000 + 100 * n)
    out = row(snap, creation=created, createtxg=str(300 + 10 * n), clones=f"rpool/ROOT/{name}")
    out += row(f"rpool/ROOT/{name}", creation=created, createtxg=str(301 + 10 * n),
               origin=snap, used=str(4096 * (n + 1)), state=state)
    if clones:
        own = f"rpool/ROOT/{name}@beadm-2026112{n}-130000"
        out += row(own, creation=created, createtxg=str(302 + 10 * n), clones=clones)
    return out


def marks(*names: str, extra: str = "") -> str:
    """zfs get output: org.beadm:auto=upgrade set locally on each named BE root."""
    return "".join(f"rpool/ROOT/{n}\torg.beadm:auto\tupgrade\tlocal\n" for n in names) + extra


def world(tmp_path: Path, listing: str, got: str, *, backend: object = None,
          mountinfo: str = MOUNTINFO, dry: bool = False,
          free: int = 900_000) -> tuple[BeManager, FakeRunner, RecordingBackend]:
    runner = FakeRunner(dry_run=dry)
    runner.on(*PROPS_ARGV, stdout=got)
    runner.on(*SPACE_ARGV, stdout=f"100000\n{free}\n")
    return manager(tmp_path, runner=runner, listing=LIST_TEXT + listing, backend=backend,
                   mountinfo=mountinfo)


LISTING = ube("u1", 1) + ube("u2", 2) + ube("u3", 3)


def test_prune_destroys_the_oldest_automatic_be_through_the_be_layer(tmp_path: Path) -> None:
    mgr, runner, backend = world(tmp_path, LISTING, marks("u1", "u2", "u3"))
    pruned = mgr.prune(Policy(keep=1, keep_important=0))
    # oldest first, each marked, its entries removed, then as destroy does it: datasets,
    # beadm's origin snapshot, entries (again: nothing left to do)
    assert runner.changes == [
        ("zfs", "set", "org.beadm:state=destroying", "rpool/ROOT/u1"),
        ("zfs", "destroy", "-r", "rpool/ROOT/u1"),
        ("zfs", "destroy", "rpool/ROOT/pve-1@beadm-20261121-120000"),
        ("zfs", "set", "org.beadm:state=destroying", "rpool/ROOT/u2"),
        ("zfs", "destroy", "-r", "rpool/ROOT/u2"),
        ("zfs", "destroy", "rpool/ROOT/pve-1@beadm-20261122-120000"),
    ]
    assert backend.calls == [("post_destroy", BeRef("u1", "rpool/ROOT/u1"))] * 2 + [
        ("post_destroy", BeRef("u2", "rpool/ROOT/u2"))] * 2
    assert [(d.be.name, d.destroy, d.reason) for d in pruned.bes] == [
        ("u3", False, "one of the newest 1"),
        ("u2", True, "older than the newest 1"),
        ("u1", True, "older than the newest 1"),
    ]  # pve-1 (running) and pve-2 (made by hand, no mark) are not even candidates
    assert pruned.esps is None  # the recording backend has no esp_usage: unknown


def test_prune_keeps_the_warnings_of_every_hook_call(tmp_path: Path) -> None:
    """prune removes a BE's entries before its datasets and destroy's post_destroy runs
    again after them: the warnings of both calls reach the result (before, the second
    call's reset lost the first's)."""
    mgr, _runner, _backend = world(tmp_path, LISTING, marks("u1", "u2", "u3"),
                                  backend=WarningBackend())
    pruned = mgr.prune(Policy(keep=1, keep_important=0))
    assert pruned.warnings == ("post_destroy #1", "post_destroy #2", "post_destroy #3",
                               "post_destroy #4")


def test_prune_never_destroys_a_protected_be(tmp_path: Path) -> None:
    listing = (ube("u1", 1) + ube("u2", 2) + ube("u3", 3) + ube("u4", 4, state="upgrading")
               + ube("u5", 5) + ube("u6", 6) + ube("u7", 7) + ube("u8", 8)
               + row("rpool/ROOT/u8@mine", createtxg="390")  # a snapshot beadm did not make
               + ube("u9", 9))
    got = marks("pve-1", "pve-2", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9",
                extra="rpool/ROOT/u5\torg.beadm:keep\tyes\tlocal\n")
    mounted = MOUNTINFO + "99 1 0:99 / /mnt/u6 rw - zfs rpool/ROOT/u6 rw\n"
    backend = RecordingBackend(BootState(next_boot="u1", once="u2", trial="u3"))
    mgr, runner, _ = world(tmp_path, listing, got, backend=backend, mountinfo=mounted)
    # u7 goes (older than the newest 1, u9); every other one is protected
    runner.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-2"))
    pruned = mgr.prune(Policy(keep=1, keep_important=0))
    reasons = {d.be.name: d.reason for d in pruned.bes}
    assert reasons == {
        "pve-1": "running now (N)",
        "pve-2": "the pool's bootfs (default)",
        "u1": "boots next (R)",
        "u2": "boots next, once (T)",
        "u3": "on trial",
        "u4": "upgrade in progress",
        "u5": "pinned (org.beadm:keep)",
        "u6": "mounted at /mnt/u6",
        "u7": "older than the newest 1",
        "u8": "holds rpool/ROOT/u8@mine, which beadm did not make",
        "u9": "one of the newest 1",
    }
    # (u4's upgrade holds no lock: it was killed; cleanup marks it failed, the next
    # prune lets it go)
    assert ("zfs", "set", "org.beadm:state=failed", "rpool/ROOT/u4") in runner.changes
    assert [c for c in runner.changes if c[:2] == ("zfs", "destroy")
            or c[2:3] == ("org.beadm:state=destroying",)] == [
        ("zfs", "set", "org.beadm:state=destroying", "rpool/ROOT/u7"),
        ("zfs", "destroy", "-r", "rpool/ROOT/u7"),
        ("zfs", "destroy", "rpool/ROOT/pve-1@beadm-20261127-120000"),
    ]


def test_the_origin_of_a_kept_clone_goes_by_promoting_the_clone(tmp_path: Path) -> None:
    # u2 was cloned from u1@beadm-...: u1 goes, u2 is promoted first and keeps its blocks
    listing = ube("u1", 1, clones="rpool/ROOT/u2") + row(
        "rpool/ROOT/u2", creation="1763700300", createtxg="330",
        origin="rpool/ROOT/u1@beadm-20261121-130000")
    mgr, runner, _ = world(tmp_path, listing, marks("u1", "u2"))
    pruned = mgr.prune(Policy(keep=1, keep_important=0))
    assert runner.changes == [
        ("zfs", "set", "org.beadm:state=destroying", "rpool/ROOT/u1"),
        ("zfs", "promote", "rpool/ROOT/u2"),
        ("zfs", "destroy", "-r", "rpool/ROOT/u1"),
        ("zfs", "destroy", "rpool/ROOT/u2@beadm-20261121-130000"),
    ]
    assert [d.be.name for d in pruned.bes if d.destroy] == ["u1"]


def test_a_failed_upgrade_goes_and_a_dry_run_changes_nothing(tmp_path: Path) -> None:
    listing = ube("u1", 1) + ube("u2", 2, state="failed")
    mgr, runner, backend = world(tmp_path, listing, marks("u1", "u2"), dry=True)
    pruned = mgr.prune(Policy(keep=5))
    assert runner.changes == []
    assert backend.calls == [("post_destroy", BeRef("u2", "rpool/ROOT/u2"))]
    assert runner.out.getvalue() == (
        "would run: zfs set org.beadm:state=destroying rpool/ROOT/u2\n"
        "would run: zfs destroy -r rpool/ROOT/u2\n"
        "would run: zfs destroy rpool/ROOT/pve-1@beadm-20261122-120000\n")
    assert [(d.be.name, d.destroy, d.reason) for d in pruned.bes] == [
        ("u2", True, "its upgrade failed: it boots nothing"), ("u1", False, "one of the newest 5")]


class EspBackend(RecordingBackend):
    """An ESP of 1000 bytes with 50 free: u1 and u2 share a kernel (300); u3 has its own
    (200); each BE's entry is 10."""

    def esp_usage(self, bes: list[BeRef]) -> tuple[EspUsage, ...] | None:
        self.calls.append(("esp_usage", tuple(b.name for b in bes)))
        return (EspUsage("1111-AAAA", 1000, 50, (
            (300, frozenset({"u1", "u2"})), (200, frozenset({"u3"})),
            (10, frozenset({"u1"})), (10, frozenset({"u2"})), (10, frozenset({"u3"})))),)


def test_the_esp_floor_makes_the_oldest_holding_be_go(tmp_path: Path) -> None:
    backend = EspBackend()
    mgr, runner, _ = world(tmp_path, LISTING, marks("u1", "u2", "u3"), backend=backend)
    pruned = mgr.prune(Policy(keep=10, esp_min_free=Floor(bytes=100)))
    # u1 alone frees 10 (its entry), not enough; with u2 the shared kernel goes too: 370
    assert [d.be.name for d in pruned.bes if d.destroy] == ["u2", "u1"]
    assert {d.reason for d in pruned.bes if d.destroy} == {
        "ESP 1111-AAAA free space below the floor (100 bytes)"}
    assert [c[-1] for c in runner.changes if c[:3] == ("zfs", "destroy", "-r")] == [
        "rpool/ROOT/u1", "rpool/ROOT/u2"]
    assert pruned.esps is not None and pruned.esp_free_after(pruned.esps[0]) == 370
    # without an automatic BE that may go, the ESPs are not even looked at
    backend.calls.clear()
    mgr, runner, _ = world(tmp_path, LISTING, marks(), backend=backend)
    assert mgr.prune(Policy()).esps is None and backend.calls == []


def test_systemd_boot_esp_usage_counts_each_file_with_the_bes_needing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = World(tmp_path)
    w.backend.init(w.ref("pve-1"))
    w.add_be("pve-2", clone_of="pve-1")  # the same kernels as pve-1
    w.add_be("up-1", {"6.9.1-1-pve": b"a newer kernel" * 50}, clone_of="pve-1")
    for be in ("pve-2", "up-1"):
        w.backend.post_create(w.ref(be))
    monkeypatch.setattr(room, "free_space", lambda p: (5000, 512))
    usage = w.backend.esp_usage(w.refs())
    assert usage is not None and [u.uuid for u in usage] == list(UUIDS)
    for u in usage:
        assert u.free == 5000 and u.size > 0
        by_refs: dict[frozenset[str], int] = {}
        for n, refs in u.files:
            assert n % 512 == 0  # whole clusters
            by_refs[refs] = by_refs.get(refs, 0) + n
        # up-1's own kernel and initrd, and its entries, are its alone; the kernels it
        # shares with pve-1 and pve-2 free nothing before all three go
        new = w.bes["rpool/ROOT/up-1"] / "boot"
        own = sum(-(-(new / f).stat().st_size // 512) * 512
                  for f in ("vmlinuz-6.9.1-1-pve", "initrd.img-6.9.1-1-pve"))
        n_entries = len([e for e in w.entries(u.uuid) if e.startswith("beadm-up-1-")])
        assert by_refs[frozenset({"up-1"})] == own + 512 * n_entries
        assert frozenset({"pve-1", "pve-2", "up-1"}) in by_refs  # K1, K2 shared by all
        assert any(K1 in f for f in w.files(u.uuid))


def test_the_esp_floor_on_an_auto_detected_grub_host_frees_what_grub_keeps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24: ``--backend auto`` on a GRUB host (GuardedBackend) hands prune the GRUB
    backend's own ``esp_usage``: the kernel files only u1 and u2 boot are freed when both
    go, so the floor makes them go (and not u3, whose kernel is its own)."""
    gw = GrubWorld(tmp_path / "grub")
    gw.add_be("u1", {"6.9.3-1-pve": b"k3" * 3000}, clone_of="pve-1")
    gw.add_be("u2", clone_of="u1")  # the same kernels as u1
    gw.add_be("u3", {"6.9.4-1-pve": b"k4" * 3000}, clone_of="pve-1")
    sd = SystemdBootBackend(gw.runner, host=gw.host, out=gw.out)
    auto = GuardedBackend(sd, efi_dir=tmp_path / "no-efi",  # legacy BIOS: a GRUB host
                          make_grub=lambda: GrubBackend(gw.runner, host=gw.host, out=gw.out))
    auto.init(gw.ref("pve-1"))
    for be in ("u1", "u2", "u3"):
        auto.post_create(gw.ref(be))
    monkeypatch.setattr(room, "free_space", lambda p: (1000, 512))
    k3 = sum(-(-(gw.bes_by_name()["u1"] / "boot" / f).stat().st_size // 512) * 512
             for f in ("vmlinuz-6.9.3-1-pve", "initrd.img-6.9.3-1-pve"))
    mgr, _, _ = world(tmp_path, LISTING, marks("u1", "u2", "u3"), backend=auto)
    pruned = mgr.prune(Policy(keep=10, esp_min_free=Floor(bytes=1000 + k3)))
    assert auto.name == "grub"
    assert sorted(d.be.name for d in pruned.bes if d.destroy) == ["u1", "u2"]
    assert pruned.esps is not None and [e.uuid for e in pruned.esps] == list(GRUB_UUIDS)
    for esp in pruned.esps:
        assert esp.free == 1000 and esp.size > 0
        assert pruned.esp_free_after(esp) == 1000 + k3


def cli(tmp_path: Path, *argv: str, conf: str = "keep = 1\n") -> tuple[int, str, str]:
    listing = LIST_TEXT + LISTING

    def make_runner(dry: bool, plan: io.StringIO) -> FakeRunner:
        r = FakeRunner(dry_run=dry)
        r.out = plan  # where the CLI wants a dry run's plan
        r.on(*LIST_ARGV, stdout=listing)
        r.on(*LIST_FS_ARGV, stdout=listing)
        r.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-1"))
        r.on("zfs", "get", "-H", "-p", "-o", "name,property,value,source", stdout=GET_TEXT)
        r.on(*PROPS_ARGV, stdout=marks("u1", "u2", "u3"))
        r.on(*SPACE_ARGV, stdout="100000\n900000\n")
        return r

    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    cfg = tmp_path / "beadm.conf"
    cfg.write_text(conf)
    out, err = io.StringIO(), io.StringIO()
    deps = Deps(make_runner=make_runner,
                make_backend=lambda name, runner: EspBackend(),  # type: ignore[arg-type,return-value]
                mountinfo=tmp_path / "mountinfo", lock_path=tmp_path / "lock", lock_wait=0.2,
                euid=lambda: 0, stdin=io.StringIO(), stdout=out, stderr=err,
                environ={}, config_path=cfg, proc=tmp_path / "noproc")
    rc = main(list(argv), deps=deps)
    return rc, out.getvalue(), err.getvalue()


def test_cli_prune_shows_bes_and_esps(tmp_path: Path) -> None:
    rc, out, err = cli(tmp_path, "prune", "-n", "-v", conf="keep = 1\nesp_min_free = 60\n")
    assert rc == 0, err
    plan = [ln for ln in out.splitlines() if ln.startswith("would run: ")]
    assert ("would run: zfs set org.beadm:state=destroying rpool/ROOT/u1") in plan
    lines = [ln for ln in out.splitlines() if ln not in plan]
    assert lines[0].split() == ["BE", "Created", "Used", "Action", "Reason"]
    rows = {ln.split()[0]: ln for ln in lines[1:4]}
    assert "keep" in rows["u3"] and "one of the newest 1" in rows["u3"]
    assert "would destroy" in rows["u2"] and "would destroy" in rows["u1"]
    assert "ESP 1111-AAAA: 50B free of 1000B, 370B after (esp_min_free 60 bytes)" in lines
    rc, out, err = cli(tmp_path, "prune", "-n", "--json", conf="esp_min_free = 5%\n")
    data = json.loads(out)
    assert data["policy"]["esp_min_free"] == "5%"
    assert data["esps"] == [{"uuid": "1111-AAAA", "size": 1000, "free": 50, "floor": 50,
                             "free_after": 50}]
    assert [(b["name"], b["destroy"]) for b in data["bes"]] == [
        ("u3", False), ("u2", False), ("u1", False)]
    assert data["bes"][0]["held"] == "" and data["dry_run"] is True
    # -n --json: the plan goes to stderr, stdout is the JSON alone; -n alone: stdout
    rc, out, err = cli(tmp_path, "prune", "-n", "--json", conf="keep = 2\nesp_min_free = 0\n")
    assert [b["name"] for b in json.loads(out)["bes"] if b["destroy"]] == ["u1"]
    assert "would run: zfs destroy -r rpool/ROOT/u1\n" in err
    rc, out, err = cli(tmp_path, "prune", "-n", conf="keep = 2\nesp_min_free = 0\n")
    assert "would run: zfs destroy -r rpool/ROOT/u1\n" in out and "would run" not in err


def test_a_killed_prune_is_finished_by_the_next_changing_command(tmp_path: Path) -> None:
    """A BE left marked ``destroying`` (a prune killed after the mark) is no BE: listed
    as such, no entries (sync leaves it out), and the next changing command destroys it."""
    listing = ube("u1", 1, state="destroying") + ube("u2", 2)
    synced: list[list[str]] = []

    class Syncing(RecordingBackend):
        def sync(self, bes: list[BeRef], *, only_if_used: bool = False) -> tuple[str, ...]:  # type: ignore[override]
            synced.append([b.name for b in bes])
            return ()

    mgr, runner, backend = world(tmp_path, listing, marks("u1", "u2"), backend=Syncing())
    # listed with its state, so that a BE whose destroy keeps failing is not hidden
    assert [(i.be.name, i.state) for i in mgr.listing().bes] == [
        ("pve-1", None), ("pve-2", None), ("u1", "destroying"), ("u2", None)]
    with mgr._lock:  # sync's own cleanup would finish u1 first: the hooks' view, mid-kill
        mgr.backend.sync([mgr._ref(b, "pve-1") for b in be_mod._bootable(mgr._tree())])
    assert synced == [["pve-1", "pve-2", "u2"]]
    pruned = mgr.prune(Policy(keep=5))
    assert runner.changes == [
        ("zfs", "destroy", "-r", "rpool/ROOT/u1"),
        ("zfs", "destroy", "rpool/ROOT/pve-1@beadm-20261121-120000"),
    ]
    assert ("post_destroy", BeRef("u1", "rpool/ROOT/u1")) in backend.calls
    assert [d.be.name for d in pruned.bes] == ["u2"]


def test_any_keep_value_but_a_no_pins_a_be_and_its_snapshots(tmp_path: Path) -> None:
    # org.beadm:keep=y on u1's root, keep=1x on a snapshot of u2: both pin (u3 stays
    # as the newest); only u4 (keep=off) goes
    listing = (ube("u1", 1) + ube("u2", 2, clones="rpool/ROOT/nothing") + ube("u3", 3)
               + ube("u4", 4) + ube("u5", 5))
    got = marks("u1", "u2", "u3", "u4", "u5", extra=(
        "rpool/ROOT/u1\torg.beadm:keep\ty\tlocal\n"
        "rpool/ROOT/u2@beadm-20261122-130000\torg.beadm:keep\t1x\tlocal\n"
        "rpool/ROOT/u3\torg.beadm:keep\tyes\tlocal\n"
        "rpool/ROOT/u4\torg.beadm:keep\toff\tlocal\n"))
    mgr, runner, _ = world(tmp_path, listing, got)
    pruned = mgr.prune(Policy(keep=1, keep_important=0))
    reasons = {d.be.name: d.reason for d in pruned.bes}
    assert reasons["u1"] == "pinned (org.beadm:keep)"
    assert reasons["u2"] == "holds the pinned snapshot rpool/ROOT/u2@beadm-20261122-130000"
    assert [d.be.name for d in pruned.bes if d.destroy] == ["u4"]
    assert [c[-1] for c in runner.changes if c[:3] == ("zfs", "destroy", "-r")] == [
        "rpool/ROOT/u4"]


USERREFS_ARGV = ("zfs", "get", "-H", "-p", "-o", "name,value", "userrefs")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_zfs_hold_keeps_its_be_before_any_mark(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # u1 (a prune candidate) has a snapshot someone holds (zfs hold; a backup tool, a zfs
    # send -R): zfs destroy would fail, so prune must not even mark it; u2 still goes
    held = "rpool/ROOT/u1@beadm-20261121-140000"
    listing = ube("u1", 1) + row(held, createtxg="315") + ube("u2", 2) + ube("u3", 3)
    mgr, runner, backend = world(tmp_path, listing, marks("u1", "u2", "u3"))
    runner.on(*USERREFS_ARGV, stdout=f"{held}\t1\n")
    with caplog.at_level(logging.WARNING, logger="beadm"):
        pruned = mgr.prune(Policy(keep=1, keep_important=0))
    assert not [c for c in runner.changes if "rpool/ROOT/u1" in c]
    assert [c[-1] for c in runner.changes if c[:3] == ("zfs", "destroy", "-r")] == [
        "rpool/ROOT/u2"]
    reasons = {d.be.name: (d.destroy, d.reason) for d in pruned.bes}
    assert reasons["u1"] == (False, f"kept: {held} has a zfs hold (zfs holds {held})")
    assert warnings(caplog) == [f"warning: prune keeps BE u1: {held} has a zfs hold "
                                f"(zfs holds {held})"]
    assert ("post_destroy", BeRef("u1", "rpool/ROOT/u1")) not in backend.calls
    # the holds were asked once, for what was to go: u1's and u2's snapshots
    asked = [c for c in runner.calls if c[:7] == USERREFS_ARGV]
    assert len(asked) == 1 and held in asked[0] and asked[0][7:] == tuple(sorted(asked[0][7:]))


def test_a_held_automatic_snapshot_is_kept_with_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # the hold is on the child's snapshot: zfs destroy -r of the root's would fail
    snaps = "".join(
        row(f"rpool/ROOT/pve-1{sub}@beadm-auto-2026112{n}-120000", createtxg=str(400 + n))
        for n in (1, 2, 3) for sub in ("", "/var"))
    got = "".join(f"rpool/ROOT/pve-1@beadm-auto-2026112{n}-120000\torg.beadm:auto\tapt"
                  "\tlocal\n" for n in (1, 2, 3))
    mgr, runner, _ = world(tmp_path, snaps, got)
    held = "rpool/ROOT/pve-1/var@beadm-auto-20261121-120000"
    runner.on(*USERREFS_ARGV, stdout=f"{held}\t2\n")
    with caplog.at_level(logging.WARNING, logger="beadm"):
        pruned = mgr.prune(Policy(keep=1, keep_important=0))
    assert [c[-1] for c in runner.changes] == [
        "rpool/ROOT/pve-1@beadm-auto-20261122-120000"]
    d = {x.snap.name: x for x in pruned.decisions}["rpool/ROOT/pve-1@beadm-auto-20261121-120000"]
    assert (d.destroy, d.reason) == (False, f"kept: {held} has a zfs hold (zfs holds {held})")
    assert len(warnings(caplog)) == 1 and held in warnings(caplog)[0]


def test_a_failed_destroy_of_a_be_removes_its_mark_and_is_one_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # busy in a way no hold shows (a clone mounted in a dead upgrade's namespace, a zfs
    # send's long hold): the mark goes, the entries come back, the prune goes on
    mgr, runner, backend = world(tmp_path, LISTING, marks("u1", "u2", "u3"))
    runner.fail("zfs", "destroy", "-r", "rpool/ROOT/u1",
                stderr="cannot destroy 'rpool/ROOT/u1': dataset is busy")
    with caplog.at_level(logging.WARNING, logger="beadm"):
        pruned = mgr.prune(Policy(keep=1, keep_important=0))
    assert runner.changes == [
        ("zfs", "set", "org.beadm:state=destroying", "rpool/ROOT/u1"),
        ("zfs", "destroy", "-r", "rpool/ROOT/u1"),
        ("zfs", "inherit", "org.beadm:state", "rpool/ROOT/u1"),
        ("zfs", "set", "org.beadm:state=destroying", "rpool/ROOT/u2"),
        ("zfs", "destroy", "-r", "rpool/ROOT/u2"),
        ("zfs", "destroy", "rpool/ROOT/pve-1@beadm-20261122-120000"),
    ]
    u1 = BeRef("u1", "rpool/ROOT/u1")
    assert backend.calls[:2] == [("post_destroy", u1), ("sync",)]  # its entries back
    (w,) = warnings(caplog)
    assert w.startswith("warning: prune keeps BE u1: could not destroy it: ") and "busy" in w
    reasons = {d.be.name: (d.destroy, d.reason) for d in pruned.bes}
    assert reasons["u1"][0] is False and "busy" in reasons["u1"][1]
    assert reasons["u2"] == (True, "older than the newest 1")
