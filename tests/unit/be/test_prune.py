"""Automatic snapshots (the apt hook) and prune: config, apt's hook input, the BE layer
(exact zfs argv against the fake runner) and the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from beadm import aptinfo, config
from beadm.be import BeManager
from beadm.cli import Deps, main
from beadm.errors import RefusedError, UsageError
from beadm.retention import Floor, Policy
from worlds.fakes import FakeRunner, RecordingBackend, pool_props
from worlds.pool import GET_TEXT, LIST_ARGV, LIST_FS_ARGV, LIST_TEXT, MOUNTINFO, manager, row

PROPS_ARGV = ("zfs", "get", "-H", "-p", "-t")  # snapshot (hook), filesystem,snapshot (prune)
SPACE_ARGV = ("zfs", "get", "-H", "-p", "-o", "value", "used,available", "rpool")

V3 = """VERSION 3
APT::Architecture=amd64
Dir::Etc::parts=apt.conf.d

pve-manager 8.4.1 amd64 none < 9.0.3 amd64 none /var/cache/apt/archives/pve-manager_9.0.3_amd64.deb
proxmox-kernel-6.14.8-2-pve-signed - - none < 6.14.8-2 amd64 same /var/cache/apt/archives/k.deb
vim 2:9.0 amd64 foreign > - - none **REMOVE**
zsh 5.9-4 amd64 none = 5.9-4 amd64 none **CONFIGURE**
"""


def auto(n: int, created: int, *, used: int = 1000, **kw: str) -> str:
    """Rows of an automatic snapshot of pve-1 (root and its child var)."""
    name = f"beadm-auto-2026112{n}-120000"
    return (row(f"rpool/ROOT/pve-1@{name}", creation=str(created), createtxg=str(created),
                used=str(used), **kw)
            + row(f"rpool/ROOT/pve-1/var@{name}", creation=str(created),
                  createtxg=str(created), used="24"))


def props(*names: str, extra: str = "") -> str:
    """zfs get output: org.beadm:auto=apt set locally on each named snapshot (root only)."""
    return "".join(f"rpool/ROOT/pve-1@{n}\torg.beadm:auto\tapt\tlocal\n" for n in names) + extra


def world(tmp_path: Path, listing: str, got: str, *, free: int = 900_000,
          dry: bool = False) -> tuple[BeManager, FakeRunner]:
    runner = FakeRunner(dry_run=dry)
    runner.on(*PROPS_ARGV, stdout=got)
    runner.on(*SPACE_ARGV, stdout=f"100000\n{free}\n")
    mgr, runner, _ = manager(tmp_path, runner=runner, listing=listing)
    return mgr, runner


SNAPS = [f"beadm-auto-2026112{n}-120000" for n in range(1, 5)]
LISTING = LIST_TEXT + "".join(auto(n, 1763700000 + n) for n in range(1, 5))


# -- prune through the BE layer -----------------------------------------------------------

def test_prune_destroys_the_oldest_beyond_keep_and_nothing_unmarked(tmp_path: Path) -> None:
    # a snapshot named like ours but never marked, and one whose mark is only inherited
    listing = LISTING + auto(0, 1763600000)
    got = props(*SNAPS, extra="rpool/ROOT/pve-1@beadm-auto-20261120-120000\torg.beadm:auto"
                              "\tapt\tinherited from rpool/ROOT/pve-1\n")
    mgr, runner = world(tmp_path, listing, got)
    pruned = mgr.prune(Policy(keep=2, keep_important=0))
    assert runner.changes == [
        ("zfs", "destroy", "-r", "rpool/ROOT/pve-1@beadm-auto-20261121-120000"),
        ("zfs", "destroy", "-r", "rpool/ROOT/pve-1@beadm-auto-20261122-120000"),
    ]
    assert [d.snap.name.rpartition("@")[2] for d in pruned.decisions] == SNAPS[::-1]
    assert pruned.decisions[0].snap.used == 1024  # the root's and the child's


def test_prune_keeps_pinned_important_and_cloned(tmp_path: Path) -> None:
    listing = (LIST_TEXT + auto(1, 1763700001, clones="rpool/ROOT/pve-3")
               + "".join(auto(n, 1763700000 + n) for n in range(2, 5)))
    got = props(*SNAPS, extra=(
        f"rpool/ROOT/pve-1@{SNAPS[1]}\torg.beadm:keep\tyes\tlocal\n"
        f"rpool/ROOT/pve-1@{SNAPS[2]}\torg.beadm:important\tkernel\tlocal\n"))
    mgr, runner = world(tmp_path, listing, got)
    pruned = mgr.prune(Policy(keep=1, keep_important=1))
    assert runner.changes == []
    reasons = {d.snap.name.rpartition("@")[2]: d.reason for d in pruned.decisions}
    assert reasons == {
        SNAPS[3]: "one of the newest 1",
        SNAPS[2]: "important (kernel): one of the newest 1 important",
        SNAPS[1]: "pinned (org.beadm:keep)",
        SNAPS[0]: "origin of rpool/ROOT/pve-3",
    }


def test_prune_floor_overrides_counts(tmp_path: Path) -> None:
    mgr, runner = world(tmp_path, LISTING, props(*SNAPS), free=1000)
    mgr.prune(Policy(keep=10, pool_min_free=Floor(bytes=2500)))
    # 1000 free + 1024 + 1024 >= 2500: the two oldest go
    assert [c[-1].rpartition("@")[2] for c in runner.changes] == [SNAPS[0], SNAPS[1]]


def test_prune_dry_run_changes_nothing(tmp_path: Path) -> None:
    mgr, runner = world(tmp_path, LISTING, props(*SNAPS), dry=True)
    mgr.prune(Policy(keep=3))
    assert runner.changes == []
    assert runner.out.getvalue() == (
        f"would run: zfs destroy -r rpool/ROOT/pve-1@{SNAPS[0]}\n")


# -- the automatic snapshot ---------------------------------------------------------------

def test_auto_snapshot_is_one_marked_recursive_snapshot(tmp_path: Path) -> None:
    mgr, runner = world(tmp_path, LIST_TEXT, "")
    done = mgr.auto_snapshot(description="apt: upgrade 1 (pve-manager)",
                             important="pve-manager 8->9", run="b:42:7", policy=Policy())
    assert done.snapshot == "rpool/ROOT/pve-1@beadm-auto-20261126-120000"
    assert not done.same_run
    assert runner.changes == [(
        "zfs", "snapshot", "-r", "-o", "org.beadm:auto=apt",
        "-o", "org.beadm:description=apt: upgrade 1 (pve-manager)",
        "-o", "org.beadm:important=pve-manager 8->9", "-o", "org.beadm:apt-run=b:42:7",
        "rpool/ROOT/pve-1@beadm-auto-20261126-120000",
    )]


def test_auto_snapshot_once_per_apt_run(tmp_path: Path) -> None:
    got = props(*SNAPS, extra=f"rpool/ROOT/pve-1@{SNAPS[3]}\torg.beadm:apt-run\tb:42:7\tlocal\n")
    mgr, runner = world(tmp_path, LISTING, got)
    done = mgr.auto_snapshot(description="apt: install 1 (k)", important="kernel",
                             run="b:42:7", policy=Policy())
    assert done.same_run and done.snapshot.endswith(SNAPS[3])
    assert runner.changes == [
        ("zfs", "set", "org.beadm:important=kernel", f"rpool/ROOT/pve-1@{SNAPS[3]}")]


def test_auto_snapshot_is_taken_when_the_prune_before_it_fails(tmp_path: Path) -> None:
    # the oldest automatic snapshot beyond keep cannot be destroyed (busy: a zfs send)
    mgr, runner = world(tmp_path, LISTING, props(*SNAPS))
    oldest = ("zfs", "destroy", "-r", f"rpool/ROOT/pve-1@{SNAPS[0]}")
    runner.fail(*oldest, stderr="cannot destroy snapshot: dataset is busy")
    done = mgr.auto_snapshot(description="apt", important="", run="", policy=Policy(keep=3))
    assert done.snapshot == "rpool/ROOT/pve-1@beadm-auto-20261126-120000"
    snap = ("zfs", "snapshot", "-r", "-o", "org.beadm:auto=apt", "-o",
            "org.beadm:description=apt", done.snapshot)
    # tried before (failed), taken, tried again after (failed again): warnings, no error
    assert [c for c in runner.calls if c in (oldest, snap)] == [oldest, snap, oldest]
    kept = {d.snap.name: d for d in done.pruned.decisions}[oldest[-1]]
    assert not kept.destroy and kept.reason == (
        f"kept: could not destroy it: zfs destroy -r {oldest[-1]}: cannot destroy "
        "snapshot: dataset is busy")


def test_auto_snapshot_refused_below_the_floor(tmp_path: Path) -> None:
    mgr, runner = world(tmp_path, LIST_TEXT, "", free=10)
    with pytest.raises(RefusedError, match="no automatic snapshot: pool rpool has 10 bytes"):
        mgr.auto_snapshot(description="apt", important="", run="",
                          policy=Policy(pool_min_free=Floor(percent=20)))
    assert runner.changes == []


def test_destroying_a_clone_keeps_its_automatic_origin(tmp_path: Path) -> None:
    snap = "rpool/ROOT/pve-1@beadm-auto-20261121-120000"
    listing = (LIST_TEXT + row(snap, clones="rpool/ROOT/pve-3")
               + row("rpool/ROOT/pve-3", origin=snap))
    mgr, runner, _ = manager(tmp_path, listing=listing)
    mgr.destroy("pve-3", force=True)
    assert ("zfs", "destroy", snap) not in runner.changes
    assert ("zfs", "destroy", "-r", "rpool/ROOT/pve-3") in runner.changes


# -- config ---------------------------------------------------------------------------------

def test_config_defaults_and_values(tmp_path: Path) -> None:
    assert config.load(tmp_path / "missing") == config.Config()
    c = config.parse("# x\nauto_snapshot = yes\nkeep=3\n keep_important = 0 \n"
                     "pool_min_free = 50G\n")
    assert c == config.Config(True, Policy(3, 0, Floor(bytes=50 << 30)))
    assert config.parse("pool_min_free = 12.5%").policy.pool_min_free == Floor(percent=12.5)


@pytest.mark.parametrize(("text", "message"), [
    ("auto_snapshots = yes", "line 1: unknown key 'auto_snapshots'"),
    ("\nauto_snapshot yes", "line 2: expected 'key = value'"),
    ("auto_snapshot = maybe", "auto_snapshot must be yes or no"),
    ("keep = -1", "keep must be a number"),
    ("keep = 0", "keep must be at least 1"),
    ("keep_important = ²", "keep_important must be a number"),
    ("pool_min_free = 120%", "pool_min_free must be a percentage"),
    ("pool_min_free = 5X", "pool_min_free must be a percentage"),
])
def test_config_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        config.parse(text, Path("/etc/beadm/beadm.conf"))


# -- apt's hook input -----------------------------------------------------------------------

def test_apt_v3_input() -> None:
    changes = aptinfo.parse(V3)
    assert [(c.name, c.action) for c in changes] == [
        ("pve-manager", "upgrade"), ("proxmox-kernel-6.14.8-2-pve-signed", "install"),
        ("vim", "remove"), ("zsh", "configure")]
    assert aptinfo.changes_packages(changes)
    assert aptinfo.importance(changes) == "kernel, pve-manager 8->9"
    assert aptinfo.describe(changes) == (
        "apt: upgrade 1 (pve-manager); install 1 (proxmox-kernel-6.14.8-2-pve-signed); "
        "remove 1 (vim)")


def test_apt_v2_and_v1_input_and_what_is_not_important() -> None:
    v2 = "VERSION 2\nX=1\n\nproxmox-kernel-helper 8.1 < 8.2 /x.deb\npve-manager 8.1 < 8.4 /y.deb\n"
    changes = aptinfo.parse(v2)
    assert [(c.name, c.old, c.new) for c in changes] == [
        ("proxmox-kernel-helper", "8.1", "8.2"), ("pve-manager", "8.1", "8.4")]
    assert aptinfo.importance(changes) == ""  # the helper is no kernel; 8 -> 8
    v1 = aptinfo.parse("/var/cache/apt/archives/linux-image-amd64_6.1.1%3a1_amd64.deb\n")
    assert [(c.name, c.new, c.action) for c in v1] == [("linux-image-amd64", "6.1.1:1", "install")]
    assert aptinfo.importance(v1) == "kernel"
    only_configure = aptinfo.parse("VERSION 3\n\nzsh 1 amd64 none = 1 amd64 none **CONFIGURE**\n")
    assert not aptinfo.changes_packages(only_configure)


def test_apt_description_is_cut_to_length() -> None:
    many = "VERSION 2\n\n" + "".join(f"package-number-{i} 1 < 2 /p{i}.deb\n" for i in range(60))
    text = aptinfo.describe(aptinfo.parse(many))
    assert len(text) <= aptinfo.DESCRIPTION_LEN
    assert text.startswith("apt: upgrade 60: package-number-0, ") and text.endswith(", ...")


def test_run_key_skips_shells(tmp_path: Path) -> None:
    (tmp_path / "sys/kernel/random").mkdir(parents=True)
    (tmp_path / "sys/kernel/random/boot_id").write_text("boot\n")
    fields = " ".join(["S"] + [str(i) for i in range(4, 52)])  # each its field number

    def proc(pid: int, comm: str, ppid: int) -> None:
        (tmp_path / str(pid)).mkdir()
        rest = fields.replace("S 4 ", f"S {ppid} ", 1)
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) {rest}\n")

    proc(300, "sh", 200)
    proc(200, "apt-get", 100)
    assert aptinfo.run_key(tmp_path, 300) == "boot:200:22"  # the start time is field 22
    assert aptinfo.run_key(tmp_path / "nowhere", 300) == ""


# -- the CLI --------------------------------------------------------------------------------

def cli(tmp_path: Path, *argv: str, conf: str | None = None, stdin: str = "",
        listing: str = LISTING, got: str = props(*SNAPS)) -> tuple[int, str, str, list[FakeRunner]]:
    runners: list[FakeRunner] = []

    def make_runner(dry: bool, out: object = None) -> FakeRunner:
        r = FakeRunner(dry_run=dry)
        r.on(*LIST_ARGV, stdout=listing)
        r.on(*LIST_FS_ARGV, stdout=listing)
        r.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-1"))
        r.on("zfs", "get", "-H", "-p", "-o", "name,property,value,source", stdout=GET_TEXT)
        r.on(*PROPS_ARGV, stdout=got)
        r.on(*SPACE_ARGV, stdout="100000\n900000\n")
        runners.append(r)
        return r

    (tmp_path / "mountinfo").write_text(MOUNTINFO)
    cfg = tmp_path / "beadm.conf"
    if conf is not None:
        cfg.write_text(conf)
    out, err = io.StringIO(), io.StringIO()
    deps = Deps(make_runner=make_runner,
                make_backend=lambda name, runner: RecordingBackend(),  # type: ignore[arg-type,return-value]
                mountinfo=tmp_path / "mountinfo", lock_path=tmp_path / "lock", lock_wait=0.2,
                euid=lambda: 0, stdin=io.StringIO(stdin), stdout=out, stderr=err,
                environ={}, config_path=cfg, proc=tmp_path / "noproc")
    rc = main(list(argv), deps=deps)
    extra = "".join(r.out.getvalue() for r in runners)
    return rc, out.getvalue() + extra, err.getvalue(), runners


def test_cli_apt_hook_off_by_default_touches_nothing(tmp_path: Path) -> None:
    rc, out, err, runners = cli(tmp_path, "apt-hook", stdin=V3)
    assert (rc, out, err, runners) == (0, "", "", [])


def test_cli_apt_hook_snapshots_when_on(tmp_path: Path) -> None:
    rc, out, err, runners = cli(tmp_path, "apt-hook", conf="auto_snapshot = yes\nkeep = 4\n",
                                stdin=V3)
    assert (rc, err) == (0, "")
    snap = [c for c in runners[0].changes if c[:2] == ("zfs", "snapshot")]
    assert len(snap) == 1 and "org.beadm:important=kernel, pve-manager 8->9" in " ".join(snap[0])
    assert "beadm: automatic snapshot rpool/ROOT/pve-1@beadm-auto-" in out


def test_cli_apt_hook_skips_configure_only_sessions(tmp_path: Path) -> None:
    rc, out, _, runners = cli(tmp_path, "apt-hook", conf="auto_snapshot = yes",
                              stdin="VERSION 3\n\nzsh 1 amd64 none = 1 amd64 none **CONFIGURE**\n")
    assert (rc, out, runners) == (0, "", [])


def test_cli_bad_config_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    for argv in (["prune"], ["apt-hook"]):
        rc, _, err, runners = cli(tmp_path, *argv, conf="keep = lots\n")
        assert rc == 2
        assert err == (f"beadm: {tmp_path}/beadm.conf line 1: keep must be a number from 0 "
                       "to 10000, got 'lots'\n")
        assert all(r.changes == [] for r in runners)


def test_cli_prune_dry_run_verbose_and_json(tmp_path: Path) -> None:
    rc, out, _, runners = cli(tmp_path, "-n", "prune", conf="keep = 3")
    assert rc == 0 and runners[0].changes == []
    lines = out.splitlines()
    assert lines[0].split() == ["Snapshot", "Created", "Used", "Action", "Reason"]
    assert SNAPS[0] in lines[1] and "would destroy" in lines[1] and len(lines) == 3
    assert lines[2] == f"would run: zfs destroy -r rpool/ROOT/pve-1@{SNAPS[0]}"
    for argv in (["-n", "-v", "prune"], ["prune", "-n", "-v"], ["-v", "prune", "--dry-run"]):
        rc, out, _, runners = cli(tmp_path, *argv, conf="keep = 3")
        assert rc == 0 and runners[0].changes == [], argv
        assert sum("keep" in line for line in out.splitlines()) == 3, argv
    rc, out, _, runners = cli(tmp_path, "prune", "--json", conf="keep = 3")
    data = json.loads(out)
    assert next(iter(data)) == "output_version"  # issue 25 item 6
    assert data["output_version"] == {"command": "beadm prune", "vers_major": 1,
                                      "vers_minor": 0}
    assert data["floor"] == 200000 and data["dry_run"] is False
    assert [s["destroy"] for s in data["snapshots"]] == [False, False, False, True]
    assert runners[0].changes == [("zfs", "destroy", "-r", f"rpool/ROOT/pve-1@{SNAPS[0]}")]


def test_auto_snapshot_after_the_clock_went_back_keeps_the_new_one(tmp_path: Path) -> None:
    # the old snapshots were taken while the clock ran a year fast; NTP corrected it: the
    # new snapshot's creation is the oldest, its createtxg the newest. The prune after it
    # must destroy the oldest by txg, not the snapshot it has just taken.
    future = 1795000000
    listing = LIST_TEXT + "".join(
        row(f"rpool/ROOT/pve-1@{s}", creation=str(future + n), createtxg=str(1000 + n))
        for n, s in enumerate(SNAPS))
    mgr, runner = world(tmp_path, listing, props(*SNAPS))
    new = "beadm-auto-20261126-120000"
    after = listing + row(f"rpool/ROOT/pve-1@{new}", creation="1764158400", createtxg="2000")

    def taken(argv: tuple[str, ...]) -> None:
        runner.on(*LIST_ARGV, stdout=after)
        runner.on(*PROPS_ARGV, stdout=props(*SNAPS, new))

    runner.on("zfs", "snapshot", hook=taken)
    done = mgr.auto_snapshot(description="apt", important="", run="", policy=Policy(keep=4))
    assert done.snapshot == f"rpool/ROOT/pve-1@{new}"
    assert [c for c in runner.changes if c[:2] == ("zfs", "destroy")] == [
        ("zfs", "destroy", "-r", f"rpool/ROOT/pve-1@{SNAPS[0]}")]


@pytest.mark.parametrize("value,pins", [
    ("yes", True), ("y", True), ("Y", True), ("keep", True), ("2027-01-01", True),
    ("ON", True), ("no", False), ("off", False), ("False", False), ("0", False), ("", False),
])
def test_any_keep_value_but_a_no_pins(tmp_path: Path, value: str, pins: bool) -> None:
    # org.beadm:keep=y (a typo of yes) must pin: only no/off/false/0/empty do not
    got = props(*SNAPS, extra=f"rpool/ROOT/pve-1@{SNAPS[0]}\torg.beadm:keep\t{value}\tlocal\n")
    mgr, runner = world(tmp_path, LISTING, got)
    pruned = mgr.prune(Policy(keep=2, keep_important=0))
    gone = [c[-1].rpartition("@")[2] for c in runner.changes]
    assert gone == ([SNAPS[1]] if pins else [SNAPS[0], SNAPS[1]])
    reason = {d.snap.name.rpartition("@")[2]: d.reason for d in pruned.decisions}[SNAPS[0]]
    assert (reason == "pinned (org.beadm:keep)") == pins
