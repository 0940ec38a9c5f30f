"""beadm upgrade: the exact command sequence, the failure path, the dry-run plan, the
failed state (list, activate, sync, an interrupted upgrade) and the chroot guard."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from beadm import aptchroot
from beadm import upgrade as upg
from beadm.backend import BeRef
from beadm.cli import Deps, main
from beadm.errors import ExistsError, InvalidNameError, RefusedError, UpgradeError
from beadm.runner import Runner
from worlds.fakes import RecordingBackend, pool_props
from worlds.pool import GET_TEXT, LIST_ARGV, LIST_FS_ARGV, LIST_TEXT, MOUNTINFO, SNAP, manager, row
from worlds.pool import without_snapshots as fs_only
from worlds.upgrade import BEFORE, ChrootRunner, FakeNamespace, chroot_dir, make

CLEAR = ("zfs", "inherit", "org.beadm:state")


def test_upgrade_exact_sequence(tmp_path: Path) -> None:
    runner = ChrootRunner()
    mgr, backend, run = make(tmp_path, runner)
    done = mgr.upgrade("pve-3", ["install", "-y", "linux-image-6.1.0-2"])
    root = chroot_dir(runner)
    assert root.startswith(str(run / "beadm-upgrade-")) and root.endswith("/root")
    base = str(Path(root).parent)
    ref = BeRef("pve-3", "rpool/ROOT/pve-3",
                "upgrade of pve-1: apt-get install -y linux-image-6.1.0-2", False)
    assert done.be == ref
    apt = ("chroot", root, "env", "DEBIAN_FRONTEND=noninteractive",
           "APT_LISTCHANGES_FRONTEND=none", "apt-get", "-o", "Dpkg::Options::=--force-confold",
           "-o", "Dpkg::Options::=--force-confdef", "install", "-y", "linux-image-6.1.0-2")
    query = ("chroot", root, *aptchroot.DPKG_QUERY)
    assert runner.changes == [
        ("zfs", "snapshot", "-r", "-o", "org.beadm:state=creating", f"rpool/ROOT/pve-1@{SNAP}"),
        ("zfs", "clone", "-o", "mountpoint=/", "-o", "acltype=posix",
         "-o", "com.example:note=a\tb", "-o", "canmount=noauto",
         "-o", "org.beadm:state=creating",
         "-o", "org.beadm:description=upgrade of pve-1: apt-get install -y linux-image-6.1.0-2",
         "-o", "org.beadm:auto=upgrade",  # made by beadm: prune's candidate
         f"rpool/ROOT/pve-1@{SNAP}", "rpool/ROOT/pve-3"),
        ("zfs", "clone", "-o", "compression=zstd", "-o", "canmount=noauto",
         "-o", "org.beadm:state=creating", f"rpool/ROOT/pve-1/var@{SNAP}",
         "rpool/ROOT/pve-3/var"),
        (*CLEAR, f"rpool/ROOT/pve-1@{SNAP}", f"rpool/ROOT/pve-1/var@{SNAP}",
         "rpool/ROOT/pve-3/var"),
        ("zfs", "set", "org.beadm:state=upgrading", "rpool/ROOT/pve-3"),
        ("mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/pve-3", root),
        ("mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/pve-3/var", f"{root}/var"),
        ("mount", "-t", "proc", "proc", f"{root}/proc"),
        ("mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", f"{root}/sys"),
        ("mount", "--rbind", "/dev", f"{root}/dev"),
        ("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", f"{root}/run"),
        ("mount", "--bind", f"{base}/empty", f"{root}/etc/kernel/proxmox-boot-uuids"),
        query,
        apt,
        query,
        ("umount", "-R", f"{root}/etc/kernel/proxmox-boot-uuids"),
        ("umount", "-R", f"{root}/run"),
        ("umount", "-R", f"{root}/dev"),
        ("umount", "-R", f"{root}/sys"),
        ("umount", "-R", f"{root}/proc"),
        ("umount", "-R", f"{root}/var"),
        ("umount", "-R", root),
        # a kernel came in: important, kept longer by prune
        ("zfs", "set", "org.beadm:important=kernel", "rpool/ROOT/pve-3"),
        (*CLEAR, "rpool/ROOT/pve-3"),
    ]  # fmt: skip
    # the boot entries are written from outside, after the chroot is gone; nothing boots it
    assert backend.calls == [("post_create", ref)]
    assert FakeNamespace.log == ["enter", "leave"]
    assert not any(c[:2] == ("zpool", "set") for c in runner.changes)
    assert [c.line() for c in done.changes] == [
        "upgraded base-files 12.4 -> 12.5",
        "installed linux-image-6.1.0-2 6.1.0-2",
        "removed old-tool 1.0",
    ]
    # policy-rc.d: there was none, ours was there during apt, and it is gone again
    assert runner.seen_during_apt == {"policy": True}
    assert not (Path(root) / "usr/sbin/policy-rc.d").exists()
    # the work directory keeps only the (here fake) mount point of the clone
    assert [p.name for p in Path(base).iterdir()] == ["root"]


def test_existing_policy_rc_d_is_bound_over_not_replaced(tmp_path: Path) -> None:
    runner = ChrootRunner(tree=("etc/kernel/proxmox-boot-uuids", "usr/sbin/policy-rc.d"))
    mgr, _, _ = make(tmp_path, runner)
    mgr.upgrade("pve-3")
    root = chroot_dir(runner)
    base = str(Path(root).parent)
    assert ("mount", "--bind", f"{base}/policy-rc.d", f"{root}/usr/sbin/policy-rc.d") \
        in runner.changes
    assert (Path(root) / "usr/sbin/policy-rc.d").read_text() == "uuid-1\n"  # untouched
    assert ("umount", "-R", f"{root}/usr/sbin/policy-rc.d") in runner.changes


def test_default_apt_args_and_name(tmp_path: Path) -> None:
    runner = ChrootRunner()
    mgr, _, _ = make(tmp_path, runner)
    done = mgr.upgrade(None)
    assert done.be.name == "upgrade-20261126-120000"
    assert done.apt_args == ("full-upgrade", "-y")
    apt = next(c for c in runner.changes if c[0] == "chroot" and "apt-get" in c)
    assert apt[-2:] == ("full-upgrade", "-y")


def test_apt_failure_marks_the_clone_failed_and_changes_nothing_else(tmp_path: Path) -> None:
    runner = ChrootRunner(apt_rc=100)
    mgr, backend, _ = make(tmp_path, runner)
    with pytest.raises(UpgradeError) as exc:
        mgr.upgrade("pve-3", ["full-upgrade", "-y"])
    msg = str(exc.value)
    assert "exited 100: E: Sub-process /usr/bin/dpkg returned an error code (1)" in msg
    assert "BE pve-3 is marked failed" in msg and "beadm destroy pve-3" in msg
    assert exc.value.exit_code == 9
    root = chroot_dir(runner)
    after_apt = runner.changes[[c[0] for c in runner.changes].index("chroot") + 2:]
    assert [c[:2] for c in after_apt if c[0] == "umount"] == [("umount", "-R")] * 7
    assert after_apt[-1] == ("zfs", "set", "org.beadm:state=failed", "rpool/ROOT/pve-3")
    # no boot entries, no bootfs, nothing of pve-1 but the clone's origin snapshot
    assert backend.calls == []
    assert not any(c[:2] == ("zpool", "set") for c in runner.changes)
    touched = {c[-1] for c in runner.changes if c[0] == "zfs"}
    assert touched <= {f"rpool/ROOT/pve-1@{SNAP}", f"rpool/ROOT/pve-1/var@{SNAP}",
                       "rpool/ROOT/pve-3", "rpool/ROOT/pve-3/var"}
    assert not (Path(root) / "usr/sbin/policy-rc.d").exists()
    assert FakeNamespace.log == ["enter", "leave"]
    assert [p.name for p in Path(root).parent.iterdir()] == ["root"]


def test_entries_that_cannot_be_written_mark_it_failed(tmp_path: Path) -> None:
    runner = ChrootRunner()
    mgr, backend, _ = make(tmp_path, runner, backend=RecordingBackend(fail_on="post_create"))
    with pytest.raises(Exception, match="post_create failed"):
        mgr.upgrade("pve-3")
    assert runner.changes[-1] == ("zfs", "set", "org.beadm:state=failed", "rpool/ROOT/pve-3")
    assert [c[0] for c in backend.calls] == ["post_create", "post_destroy"]


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    runner = ChrootRunner(dry_run=True)
    mgr, _, run = make(tmp_path, runner)
    done = mgr.upgrade("pve-3", ["install", "-y", "foo"])
    assert runner.changes == [] and done.changes == ()
    out = runner.out.getvalue()
    for want in ("would run: zfs clone", "rpool/ROOT/pve-3",
                 "would run: zfs set org.beadm:state=upgrading rpool/ROOT/pve-3",
                 "would run: mount -t zfs -o zfsutil rpool/ROOT/pve-3/var",
                 "/etc/kernel/proxmox-boot-uuids", "policy-rc.d exit 101",
                 "env DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none apt-get -o "
                 "Dpkg::Options::=--force-confold",
                 "install -y foo", "would run: zfs inherit org.beadm:state rpool/ROOT/pve-3"):
        assert want in out, want
    assert FakeNamespace.log == [] and list(run.iterdir()) == []


def test_upgrade_refuses_bad_name_and_existing_be_before_any_change(tmp_path: Path) -> None:
    runner = ChrootRunner()
    mgr, _, _ = make(tmp_path, runner)
    with pytest.raises(ExistsError, match="already exists"):
        mgr.upgrade("pve-2")
    with pytest.raises(InvalidNameError):
        mgr.upgrade("a:b")
    assert runner.changes == []


def _with_state(state: str) -> str:
    lines = []
    for line in LIST_TEXT.splitlines(keepends=True):
        cols = line.split("\t")
        if cols[0] == "rpool/ROOT/pve-2":
            cols[11] = state
        lines.append("\t".join(cols))
    return "".join(lines)


class SyncBackend(RecordingBackend):
    def sync(self, bes: list[object], *, only_if_used: bool = False) -> tuple[str, ...]:
        return self._hook("sync", tuple(b.name for b in bes))  # type: ignore[attr-defined]


def test_interrupted_upgrade_becomes_failed_and_gets_no_entries(tmp_path: Path) -> None:
    backend = SyncBackend()
    mgr, runner, _ = manager(tmp_path, listing=_with_state("upgrading"), backend=backend)
    mgr.sync()
    assert ("zfs", "set", "org.beadm:state=failed", "rpool/ROOT/pve-2") in runner.changes
    assert backend.calls == [("sync", ("pve-1",))]


def test_failed_be_is_refused_by_activate_unless_forced(tmp_path: Path) -> None:
    mgr, runner, backend = manager(tmp_path, listing=_with_state("failed"))
    with pytest.raises(RefusedError, match="its upgrade failed"):
        mgr.activate("pve-2")
    with pytest.raises(RefusedError, match="its upgrade failed"):
        mgr.activate_trial("pve-2", tries=3)
    with pytest.raises(RefusedError, match="failed upgrade"):
        mgr.rename("pve-2", "pve-9")
    assert runner.changes == [] and backend.calls == []
    mgr.activate("pve-2", force=True)
    assert (*CLEAR, "rpool/ROOT/pve-2") in runner.changes
    assert backend.calls[-1][0] == "activate"


# -- CLI --------------------------------------------------------------------------------


def cli(tmp_path: Path, *argv: str, listing: str = LIST_TEXT, chrooted: bool = False,
        apt_rc: int = 0, trials: bool = True) -> tuple[int, str, str, list[ChrootRunner]]:
    runners: list[ChrootRunner] = []
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)

    def make_runner(dry: bool, out: object = None) -> ChrootRunner:
        r = ChrootRunner(dry_run=dry, apt_rc=apt_rc)
        r.on(*LIST_ARGV, stdout=listing)
        r.on(*LIST_FS_ARGV, stdout=fs_only(listing))
        r.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-1"))
        r.on("zfs", "get", "-H", "-p", "-o", "name,property,value,source", stdout=GET_TEXT)
        runners.append(r)
        return r

    mi = tmp_path / "mountinfo"
    mi.write_text(MOUNTINFO)
    out, err = io.StringIO(), io.StringIO()
    real = aptchroot.Chroot  # beadm.be imports beadm.upgrade where upgrade runs: patch its name

    def chroot(r: Runner, plan: Sequence[tuple[str, str]], **kw: object) -> aptchroot.Chroot:
        return real(r, plan, tmp_base=str(run), namespace=FakeNamespace,
                    out=r.out)  # type: ignore[attr-defined]

    deps = Deps(make_runner=make_runner,
                make_backend=lambda n, r: RecordingBackend(trials=trials),  # type: ignore[arg-type,return-value]
                mountinfo=mi, running_root=tmp_path / "running", lock_path=tmp_path / "lock",
                lock_wait=0.2, euid=lambda: 0, stdin=io.StringIO(), stdout=out, stderr=err,
                in_chroot=lambda: chrooted)
    mp = pytest.MonkeyPatch()
    mp.setattr(upg, "Chroot", chroot)
    try:
        rc = main(list(argv), deps=deps)
    finally:
        mp.undo()
    text = out.getvalue() + "".join(r.out.getvalue() for r in runners)
    return rc, text, err.getvalue(), runners


def test_cli_upgrade_prints_the_package_changes(tmp_path: Path) -> None:
    rc, out, err, runners = cli(tmp_path, "upgrade", "-q", "pve-3", "--", "install", "-y", "foo")
    assert (rc, err) == (0, "")
    assert out.splitlines() == [
        "upgraded base-files 12.4 -> 12.5",
        "installed linux-image-6.1.0-2 6.1.0-2",
        "removed old-tool 1.0",
        "BE pve-3 is ready (cloned from pve-1, which keeps running and booting): "
        "'beadm activate --trial pve-3' and reboot to try it",
    ]
    apt = next(c for c in runners[0].changes if c[0] == "chroot" and "apt-get" in c)
    assert apt[-3:] == ("install", "-y", "foo")


def test_cli_upgrade_suggests_what_works_on_this_host(tmp_path: Path) -> None:
    """Issue 23.8: where the boot backend has no trial boots (a GRUB host, --backend none),
    the hint is a one-time boot, not 'activate --trial' (which exits 7 there)."""
    rc, out, err, _ = cli(tmp_path, "upgrade", "--quiet", "pve-3", trials=False)
    assert (rc, err) == (0, "")
    assert out.splitlines()[-1] == (
        "BE pve-3 is ready (cloned from pve-1, which keeps running and booting): "
        "'beadm activate -t pve-3' and reboot to try it once")


def test_cli_upgrade_shows_apt_output_as_it_comes(tmp_path: Path) -> None:
    """Issue 25 item 8: apt's lines on stderr, prefixed, through the runner's on_line (the
    fake calls it while "apt runs"); stdout has only the result."""
    rc, out, err, runners = cli(tmp_path, "upgrade", "pve-3")
    assert rc == 0 and runners[0].streamed is True
    assert err.splitlines() == ["apt: Setting up linux-image-6.1.0-2", "apt: W: a warning"]
    assert "apt:" not in out and out.splitlines()[0] == "upgraded base-files 12.4 -> 12.5"
    # -q -v: apt's lines still reach the verbose log
    rc, out, err, runners = cli(tmp_path, "upgrade", "-q", "-v", "pve-3")
    assert rc == 0
    assert "beadm: apt: Setting up linux-image-6.1.0-2" in err.splitlines()


def test_cli_upgrade_json(tmp_path: Path) -> None:
    rc, out, _, _ = cli(tmp_path, "upgrade", "--json", "pve-3")
    assert rc == 0
    data = json.loads(out)
    assert next(iter(data)) == "output_version"  # issue 25 item 6
    assert data["output_version"] == {"command": "beadm upgrade", "vers_major": 1,
                                      "vers_minor": 0}
    assert data["be"] == "pve-3" and data["source"] == "pve-1" and not data["dry_run"]
    assert data["apt_args"] == ["full-upgrade", "-y"]
    assert data["changes"][0] == {"kind": "upgraded", "package": "base-files",
                                  "old": "12.4", "new": "12.5"}


def test_cli_upgrade_dry_run_after_the_command(tmp_path: Path) -> None:
    rc, out, err, runners = cli(tmp_path, "upgrade", "-n", "pve-3")
    assert (rc, err) == (0, "")
    assert runners[0].changes == []
    assert "apt-get -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef " \
        "full-upgrade -y" in out


def test_cli_upgrade_failure_is_one_line(tmp_path: Path) -> None:
    rc, _, err, runners = cli(tmp_path, "upgrade", "-q", "pve-3", apt_rc=100)
    assert rc == 9
    assert len(err.splitlines()) == 1 and "BE pve-3 is marked failed" in err
    # the useful part of apt's output: its error, not the note after it
    assert "exited 100: E: Sub-process /usr/bin/dpkg returned an error code (1);" in err
    assert runners[0].changes[-1] == ("zfs", "set", "org.beadm:state=failed",
                                      "rpool/ROOT/pve-3")


def test_cli_list_shows_a_failed_be(tmp_path: Path) -> None:
    rc, out, _, _ = cli(tmp_path, "list", listing=_with_state("failed"))
    assert rc == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("pve-2"))
    assert line.endswith("[failed] before upgrade")
    rc, out, _, _ = cli(tmp_path, "list", "--json", listing=_with_state("failed"))
    states = {b["name"]: b["state"] for b in json.loads(out)["bes"]}
    assert states == {"pve-1": None, "pve-2": "failed"}


def test_in_a_chroot_hooks_do_nothing_and_boot_commands_are_refused(tmp_path: Path) -> None:
    rc, out, err, runners = cli(tmp_path, "sync", "--if-used", chrooted=True)
    assert (rc, out) == (0, "")
    assert len(err.splitlines()) == 1 and "in a chroot" in err
    assert all(r.changes == [] for r in runners)
    for argv in (["activate", "pve-2"], ["sync"], ["create", "pve-9"], ["upgrade"],
                 ["destroy", "-F", "pve-2"], ["init"]):
        rc, _, err, runners = cli(tmp_path, *argv, chrooted=True)
        assert rc == 5, argv
        assert len(err.splitlines()) == 1 and "refused in a chroot" in err
        assert all(r.changes == [] for r in runners)
    # not boot-changing: still works
    rc, _, _, _ = cli(tmp_path, "list", chrooted=True)
    assert rc == 0


def test_package_diff_parsing() -> None:
    before = aptchroot.parse_packages(BEFORE)
    assert "gone-long-ago" not in before  # config files only: not installed
    assert aptchroot.diff(before, before) == ()
    assert aptchroot.diff({"a:i386": "1"}, {"a:i386": "2"}) == (
        aptchroot.Change("upgraded", "a:i386", "1", "2"),)


def test_row_helper_still_matches_columns() -> None:
    assert row("rpool/ROOT/x", state="failed").split("\t")[11] == "failed"
