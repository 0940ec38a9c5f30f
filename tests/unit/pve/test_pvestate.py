"""beadm.pvestate: detection over fake dataset lists and mount tables; beadm.statemove: the
move on a fake Proxmox host (worlds.pve): the exact commands, the dry run, and a kill at every
step followed by a re-run."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from beadm import pvestate, statecopy, statedropins, statemove
from beadm.errors import RefusedError
from beadm.mounts import Mount, parse_mountinfo
from beadm.zfs import parse_list
from worlds.pool import row
from worlds.pve import BE, POOL, Killed, PveWorld

VZ = "/var/lib/vz"
PC = "/var/lib/pve-cluster"


def ds(*rows: str) -> list:  # type: ignore[type-arg]
    return parse_list("".join(rows))


def zmount(src: str, mp: str) -> Mount:
    return Mount(mp, "zfs", src)


BASE = [row("rpool", mountpoint="/rpool"), row("rpool/ROOT", canmount="off"),
        row(BE, mountpoint="/", canmount="on", mounted="yes"),
        row("rpool/data", mountpoint="/rpool/data", mounted="yes")]
ALL = {sp.path for sp in pvestate.SHARED}


def kinds(found: list[pvestate.Finding]) -> dict[str, str]:
    return {f.path: f.kind for f in found}


# -- detection (pure) ------------------------------------------------------------------------


def test_detect_install_815_with_var_lib_vz_dataset() -> None:
    datasets = ds(*BASE, row("rpool/var-lib-vz", mountpoint=VZ, canmount="on", mounted="yes"))
    mounts = [zmount(BE, "/"), zmount("rpool/data", "/rpool/data"),
              zmount("rpool/var-lib-vz", VZ), Mount("/etc/pve", "fuse", "/dev/fuse")]
    found = pvestate.detect(datasets, mounts, pool=POOL, be_dataset=BE, present=ALL)
    assert kinds(found) == {VZ: "shared", "/var/lib/pve-manager": "inside", PC: "inside",
                            "/etc/corosync": "inside"}
    f = {f.path: f for f in found}
    assert f[PC].dataset == "rpool/var-lib-pve-cluster" and f[PC].source == BE
    assert f[VZ].dataset == "rpool/var-lib-vz" and f[VZ].source == "rpool/var-lib-vz"


def test_detect_older_install_everything_inside_and_absent_paths() -> None:
    mounts = [zmount(BE, "/"), zmount("rpool/data", "/rpool/data")]
    found = pvestate.detect(ds(*BASE), mounts, pool=POOL, be_dataset=BE,
                            present={VZ, PC})
    assert kinds(found) == {VZ: "inside", "/var/lib/pve-manager": "absent", PC: "inside",
                            "/etc/corosync": "absent"}
    assert [f.path for f in found if f.to_move] == [VZ, PC]


def test_detect_already_migrated_host() -> None:
    rows_ = [row(pvestate.dataset_for(POOL, p), mountpoint=p, canmount="on", mounted="yes")
             for p in ALL]
    mounts = [zmount(BE, "/")] + [zmount(pvestate.dataset_for(POOL, p), p) for p in ALL]
    found = pvestate.detect(ds(*BASE, *rows_), mounts, pool=POOL, be_dataset=BE, present=ALL)
    assert set(kinds(found).values()) == {"shared"}
    assert not any(f.to_move for f in found)


def test_detect_interrupted_child_conflict_and_altroot() -> None:
    datasets = ds(*BASE, row(f"{BE}/var", mountpoint="/var", mounted="yes"),
                  row("rpool/var-lib-vz", mountpoint=VZ, canmount="noauto", state="moving"),
                  row("rpool/etc-corosync", mountpoint="/etc/corosync", canmount="noauto"))
    mounts = parse_mountinfo(f"1 0 0:1 / /mnt/lab rw - zfs {BE} rw\n"
                             f"2 1 0:2 / /mnt/lab/var rw - zfs {BE}/var rw\n")
    found = pvestate.detect(datasets, mounts, pool=POOL, be_dataset=BE, root_dir="/mnt/lab",
                            present=ALL)
    assert kinds(found) == {VZ: "pending", "/var/lib/pve-manager": "child", PC: "child",
                            "/etc/corosync": "conflict"}
    assert {f.source_mount for f in found} == {"/mnt/lab/var", "/mnt/lab"}


def test_dropins_name_each_moved_path_for_its_units() -> None:
    units = statedropins.dropins({PC, "/etc/corosync"})
    assert sorted(units) == ["corosync.service", "pve-cluster.service"]
    text = units["pve-cluster.service"]
    assert "After=zfs-mount.service\n" in text
    assert "RequiresMountsFor=/var/lib/pve-cluster\n" in text
    assert "AssertPathIsMountPoint=/etc/corosync\n" in text
    assert statedropins.dropins({VZ}) == {}


# -- the move on a fake host -----------------------------------------------------------------

VZ_FILES = {"dump/vzdump-qemu-100.vma.zst": b"backup" * 1000, "template/iso/a.iso": b"iso",
            "images/100/vm-100-disk-0.raw": b"disk"}


def old_install(tmp: Path) -> PveWorld:
    """Installer < 8.1.5: vz and pve-cluster inside pve-1 (pve-manager, corosync absent);
    config.db left with a WAL of committed rows, as after a crash."""
    w = PveWorld(tmp, active={"pve-cluster.service", "pvedaemon.service",
                              "pvescheduler.service", "sshd.service"})
    for rel, data in VZ_FILES.items():
        p = w.live(VZ) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (w.live(VZ) / "backups").symlink_to("dump")
    seed = tmp / "seed"
    seed.mkdir()
    conn = sqlite3.connect(seed / "config.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE tree (id INTEGER PRIMARY KEY, t TEXT)")
    conn.executemany("INSERT INTO tree (t) VALUES (?)", [(f"vm {i}",) for i in range(50)])
    conn.commit()
    w.live(PC).mkdir(parents=True)
    for name in ("config.db", "config.db-wal"):
        (w.live(PC) / name).write_bytes((seed / name).read_bytes())
    conn.close()
    (w.live(PC) / ".pmxcfs.lockfile").write_text("")
    return w


def mover(w: PveWorld, *, kill_at: str | None = None,
          step: Callable[[str], None] | None = None) -> statemove.Mover:
    w.kill_at = kill_at
    return statemove.Mover(w.runner, pool=POOL, be_root="rpool/ROOT", be_dataset=BE,
                          root_dir=str(w.root), mountinfo=w.mountinfo,
                          step=step if step is not None else w.step,
                          tmpdir=str(w.tmp / "t"), out=w.runner.out, proc=w.proc,
                          sys_block=w.sys_block, lstat=w.lstat)


def norm(w: PveWorld, argv: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(re.sub(r"^" + re.escape(str(w.tmp / "t")) + r"/beadm-\w+", "TMP",
                        a.replace(str(w.root), "ROOT")) for a in argv)


def rows_in(db: Path) -> list[str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return [t for (t,) in c.execute("SELECT t FROM tree ORDER BY id")]


def assert_consistent(w: PveWorld) -> None:
    """Everything moved, mounted, verified; old copies gone; services back; no marks."""
    for path, name in ((VZ, "rpool/var-lib-vz"), (PC, "rpool/var-lib-pve-cluster")):
        p = w.ds[name]
        assert (p["canmount"], p["mountpoint"]) == ("on", path)
        assert "org.beadm:state" not in p and "org.beadm:restart" not in p
        assert (name, str(w.live(path))) in w.mounts
        assert w.live(path).resolve() == w.files(name).resolve()
        assert [c.name for c in w.shadowed(path).iterdir()] == [], "old copy left in the BE"
    for rel, data in VZ_FILES.items():
        assert (w.live(VZ) / rel).read_bytes() == data
    assert (w.live(VZ) / "backups").readlink() == Path("dump")
    wal = w.live(PC) / "config.db-wal"  # the rows are in the file itself, not in a WAL
    assert not wal.exists() or wal.stat().st_size == 0
    assert rows_in(w.live(PC) / "config.db") == [f"vm {i}" for i in range(50)]
    assert (w.live(PC) / ".pmxcfs.lockfile").exists()
    assert w.active >= {"pve-cluster.service", "pvedaemon.service", "pvescheduler.service"}
    dropin = w.root / "etc/systemd/system/pve-cluster.service.d" / statedropins.DROPIN_NAME
    assert "RequiresMountsFor=/var/lib/pve-cluster" in dropin.read_text()
    pve2 = w.files("rpool/ROOT/pve-2") / "etc/systemd/system/pve-cluster.service.d"
    assert (pve2 / statedropins.DROPIN_NAME).read_text() == dropin.read_text()
    assert [mp for src, mp in w.mounts if mp.startswith(str(w.tmp / "t"))] == []
    assert not any(f.to_move for f in mover(w).findings())


TMP = "TMP"
PLAN_VZ = [
    ("zfs", "create", "-o", "canmount=noauto", "-o", "mountpoint=/var/lib/vz",
     "-o", "org.beadm:state=moving", "-o", "org.beadm:restart=pvescheduler.service",
     "rpool/var-lib-vz"),
    ("systemctl", "stop", "pvescheduler.service"),
    ("mount", "-t", "zfs", "-o", "zfsutil", "rpool/var-lib-vz", TMP),
    ("cp", "-a", "--", "ROOT/var/lib/vz/.", "TMP/"),
    ("sync", "-f", TMP),
    ("umount", TMP),
    ("zfs", "set", "canmount=on", "rpool/var-lib-vz"),
    ("zfs", "mount", "rpool/var-lib-vz"),
    ("zfs", "set", "org.beadm:state=removing", "rpool/var-lib-vz"),
    ("mount", "--bind", "ROOT", TMP),
    ("umount", TMP),
]
RESTART = "pvescheduler.service,pve-cluster.service,pvedaemon.service"
PLAN_PC = [
    ("zfs", "create", "-o", "canmount=noauto", "-o", "mountpoint=/var/lib/pve-cluster",
     "-o", "org.beadm:state=moving", "-o", f"org.beadm:restart={RESTART}",
     "rpool/var-lib-pve-cluster"),
    ("systemctl", "stop", "pve-cluster.service", "pvedaemon.service"),
    ("mount", "-t", "zfs", "-o", "zfsutil", "rpool/var-lib-pve-cluster", TMP),
    ("cp", "-a", "--", "ROOT/var/lib/pve-cluster/.", "TMP/"),
    ("sync", "-f", TMP),
    ("umount", TMP),
    ("zfs", "set", "canmount=on", "rpool/var-lib-pve-cluster"),
    ("zfs", "mount", "rpool/var-lib-pve-cluster"),
    ("zfs", "set", "org.beadm:state=removing", "rpool/var-lib-pve-cluster"),
    ("mount", "--bind", "ROOT", TMP),
    ("umount", TMP),
]
PLAN_END = [
    ("mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/pve-2", TMP),
    ("umount", TMP),
    ("systemctl", "daemon-reload"),
    ("systemctl", "start", *RESTART.split(",")),
    ("zfs", "inherit", "org.beadm:restart", "rpool/var-lib-vz"),
    ("zfs", "inherit", "org.beadm:state", "rpool/var-lib-vz"),
    ("zfs", "inherit", "org.beadm:restart", "rpool/var-lib-pve-cluster"),
    ("zfs", "inherit", "org.beadm:state", "rpool/var-lib-pve-cluster"),
]


def test_move_runs_exactly_these_commands_and_ends_consistent(tmp_path: Path) -> None:
    w = old_install(tmp_path)
    found = mover(w).move_all()
    assert [f.path for f in found if f.to_move] == [VZ, PC]
    assert [norm(w, c) for c in w.runner.changes] == PLAN_VZ + PLAN_PC + PLAN_END
    assert_consistent(w)
    assert w.active == {"pve-cluster.service", "pvedaemon.service", "pvescheduler.service",
                        "sshd.service"}


def test_each_copy_of_the_move_is_reported_as_progress(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 25.8: ``init --shared-state`` copying /var/lib/vz (it can be large) says so on
    the progress logger, which a terminal shows; a dry run prints the cp command instead."""
    w = old_install(tmp_path)
    with caplog.at_level(logging.INFO, logger="beadm.progress"):
        mover(w).move_all()
    said = [r.getMessage() for r in caplog.records if r.name == "beadm.progress"]
    assert [s.split(" (")[0] for s in said] == [f"copying {VZ}", f"copying {PC}"]
    assert all(s.endswith(f"MiB) to {pvestate.dataset_for(POOL, p)}")
               for s, p in zip(said, (VZ, PC), strict=True)), said


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    w = old_install(tmp_path)
    w.runner._dry_run = True
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    mover(w).move_all()
    assert w.runner.changes == []
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert set(w.ds) == {POOL, "rpool/ROOT", BE, "rpool/ROOT/pve-2"}
    text = w.runner.out.getvalue().replace(str(w.root), "ROOT")
    text = text.replace(str(tmp_path / "t"), "T")
    lines = text.splitlines()
    assert lines[0] == ("would run: zfs create -o canmount=noauto -o mountpoint=/var/lib/vz "
                        "-o org.beadm:state=moving -o org.beadm:restart=pvescheduler.service "
                        "rpool/var-lib-vz")
    assert "would run: cp -a -- ROOT/var/lib/vz/. T/beadm-XXXXXXXX/" in lines
    assert "would copy ROOT/var/lib/pve-cluster/config.db with the SQLite backup API" in lines
    assert "would remove the old copy of /var/lib/vz from rpool/ROOT/pve-1" in lines
    assert ("would write ROOT/etc/systemd/system/pve-cluster.service.d/"
            "beadm-shared-state.conf") in lines
    assert lines[-1] == "would run: zfs inherit org.beadm:state rpool/var-lib-pve-cluster"
    assert len([ln for ln in lines if ln.startswith("would run: ")]) == len(
        PLAN_VZ + PLAN_PC + PLAN_END)


def _all_steps(tmp_path: Path) -> list[str]:
    w = old_install(tmp_path / "probe")
    mover(w).move_all()
    return w.steps


def test_a_kill_at_any_step_then_a_rerun_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "probe").mkdir()
    steps = _all_steps(tmp_path)
    assert "verify /var/lib/pve-cluster" in steps and "remove-old /var/lib/vz" in steps
    assert len(steps) > 20
    for n, step in enumerate(steps):
        if step == "done":  # after the last change: nothing left to do
            continue
        d = tmp_path / f"k{n}"
        d.mkdir()
        w = old_install(d)
        with pytest.raises(Killed):
            mover(w, kill_at=step).move_all()
        w.dead = False
        # the data is complete in the BE or in a dataset (never only in a partial copy)
        for path in (VZ, PC):
            name = pvestate.dataset_for(POOL, path)
            switched = w.ds.get(name, {}).get("canmount") == "on"
            where = w.files(name) if switched else w.live(path)
            assert (where / "config.db").exists() or (where / "dump").exists(), (step, path)
        mover(w).move_all()
        try:
            assert_consistent(w)
        except AssertionError as exc:
            raise AssertionError(f"killed at {step!r}: {exc}") from exc


def test_a_failure_restarts_what_was_stopped_and_keeps_the_mark(tmp_path: Path) -> None:
    w = old_install(tmp_path)
    w.runner.fail("sync", stderr="sync: I/O error")
    with pytest.raises(Exception, match="I/O error"):
        mover(w).move_all()
    assert w.active >= {"pvescheduler.service", "pve-cluster.service"}
    assert w.ds["rpool/var-lib-vz"]["org.beadm:state"] == "moving"
    assert w.ds["rpool/var-lib-vz"]["canmount"] == "noauto"
    assert (w.live(VZ) / "dump").is_dir()  # the BE still has it all


def test_verify_refuses_a_copy_that_differs(tmp_path: Path) -> None:
    src, dst = tmp_path / "a", tmp_path / "b"
    src.mkdir()
    dst.mkdir()
    (src / "x").write_text("12")
    (dst / "x").write_text("1")
    with pytest.raises(RefusedError, match="differs"):
        statecopy.verify_copy(src, dst, [])
    shutil.copy2(src / "x", dst / "x")  # as cp -a: the size and the mtime
    statecopy.verify_copy(src, dst, [])


def test_refuses_child_dataset_before_changing_anything(tmp_path: Path) -> None:
    w = old_install(tmp_path)
    w.ds["rpool/ROOT/pve-1/var"] = {"mountpoint": "/var", "canmount": "noauto"}
    w.mounts.append(("rpool/ROOT/pve-1/var", str(w.root / "var")))
    w._write_mountinfo()
    with pytest.raises(RefusedError, match="child dataset rpool/ROOT/pve-1/var"):
        mover(w).move_all()
    assert w.runner.changes == []


def test_refuses_a_move_the_pool_has_no_room_for(tmp_path: Path) -> None:
    w = old_install(tmp_path)
    w.ds[POOL]["available"] = "1000"
    with pytest.raises(RefusedError, match=r"/var/lib/vz needs \d+ bytes, pool rpool has 1000"):
        mover(w).move_all()
    assert w.runner.changes == []


def test_switched_but_not_mounted_redoes_the_copy_from_the_be(tmp_path: Path) -> None:
    """Killed between canmount=on and the mount, then pve-cluster started by hand wrote into
    the BE's copy: the re-run copies again instead of mounting the older copy over it."""
    w = old_install(tmp_path)
    with pytest.raises(Killed):
        mover(w, kill_at="mount /var/lib/pve-cluster").move_all()
    w.dead = False
    assert w.ds["rpool/var-lib-pve-cluster"]["canmount"] == "on"
    with closing(sqlite3.connect(w.live(PC) / "config.db")) as c:
        c.execute("INSERT INTO tree (t) VALUES ('written after the kill')")
        c.commit()
    mover(w).move_all()
    assert rows_in(w.live(PC) / "config.db")[-1] == "written after the kill"


def test_a_half_removed_be_copy_is_never_redone(tmp_path: Path) -> None:
    """Killed while removing the BE's old copy, then rebooted without the dataset mounted:
    the dataset is the only complete copy, so the re-run mounts it and finishes."""
    w = old_install(tmp_path)
    with pytest.raises(Killed):
        mover(w, kill_at="remove-old /var/lib/vz").move_all()
    w.dead = False
    assert w.ds["rpool/var-lib-vz"]["org.beadm:state"] == "removing"
    # the reboot: the mount is gone, the BE's directory half emptied
    live = w.live(VZ)
    live.unlink()
    w.shadowed(VZ).rename(live)
    shutil.rmtree(w.shadowed(VZ).parent)
    shutil.rmtree(live / "dump")
    w.mounts.remove(("rpool/var-lib-vz", str(live)))
    w._write_mountinfo()
    w.ds["rpool/var-lib-vz"]["canmount"] = "on"
    mover(w).move_all()
    assert ("zfs", "destroy", "rpool/var-lib-vz") not in w.runner.changes
    assert_consistent(w)


# -- what must not move: links, open files, a change during the copy (issue 23) -------------


def tree(top: Path) -> dict[str, bytes | str]:
    """Every entry under ``top`` (links not followed): file -> content, link -> target."""
    out: dict[str, bytes | str] = {}
    for p in sorted(top.rglob("*")):
        rel = str(p.relative_to(top))
        if p.is_symlink():
            out[rel] = f"-> {p.readlink()}"
        elif p.is_file():
            out[rel] = p.read_bytes()
        else:
            out[rel] = "dir"
    return out


@pytest.mark.parametrize("link", [VZ, "/var/lib"])
def test_refuses_a_path_through_a_symlink_before_changing_anything(
        tmp_path: Path, link: str) -> None:
    """/var/lib/vz -> /data/vz: zfs mount would follow the link and the removal of the old
    copy would go through it into the new dataset. Refused, whichever component is a link."""
    w = old_install(tmp_path)
    real = w.root / "data" / link.strip("/").replace("/", "-")
    real.parent.mkdir()
    w.live(link).rename(real)
    w.live(link).symlink_to(real)
    before = tree(w.root)
    with pytest.raises(RefusedError, match=f"{link} is a symbolic link"):
        mover(w).move_all()
    assert w.runner.changes == []
    assert tree(w.root) == before
    found = {f.path: f for f in mover(w).findings()}
    assert found[VZ].kind == pvestate.LINK
    assert pvestate.describe(found[VZ]).startswith(f"{VZ}: {link} is a symbolic link")


def test_symlink_in_looks_at_each_component_under_the_root(tmp_path: Path) -> None:
    (tmp_path / "var/lib/vz").mkdir(parents=True)
    (tmp_path / "etc").symlink_to("var")
    assert pvestate.symlink_in(str(tmp_path), VZ) is None
    assert pvestate.symlink_in(str(tmp_path), "/etc/corosync") == "/etc"
    assert pvestate.symlink_in(str(tmp_path), "/var/lib/none/x") is None  # absent: no link
    (tmp_path / "var/lib/vz").rmdir()
    (tmp_path / "var/lib/vz").symlink_to("/nonexistent")  # dangling still counts
    assert pvestate.symlink_in(str(tmp_path), VZ) == VZ


def _disk(w: PveWorld) -> str:
    return str(w.live(VZ) / "images/100/vm-100-disk-0.raw")


@pytest.mark.parametrize("how", ["fd", "maps", "cwd", "root", "mount", "loop", "swap"])
def test_refuses_while_a_file_under_a_path_is_in_use(tmp_path: Path, how: str) -> None:
    """A running VM with its disk on the local storage (qemu has it open, or maps it), a
    shell in the directory, a container whose root file system lies under it (its own mount
    namespace), a loop device or a swap file: the BE's copy would be unlinked under it."""
    w = old_install(tmp_path)
    disk = _disk(w)
    Path(disk).write_bytes(b"disk")
    sub = "/var/lib/vz/images/101/subvol-101-disk-0"
    if how == "fd":
        w.hold(4242, "kvm", fd=disk)
    elif how == "maps":
        w.hold(4242, "kvm", maps=disk)
    elif how == "cwd":
        w.hold(4242, "bash", cwd=str(w.live(VZ) / "dump"))
    elif how == "root":
        w.hold(4242, "lxc-init", root=str(w.live(sub)))
    elif how == "mount":
        sub = "/var/lib/vz/images/101/subvol 101"  # as escaped in mountinfo:
        esc = sub.replace(" ", "\\040")
        w.hold(4242, "init", mountinfo=(f"900 800 0:50 {esc} / rw - zfs {BE} rw\n"
                                        f"901 900 0:5 / /dev rw - tmpfs none rw\n"))
    elif how == "loop":
        (w.sys_block / "loop0/loop").mkdir(parents=True)
        (w.sys_block / "loop0/loop/backing_file").write_text(disk + "\n")
    else:
        (w.proc / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n"
                                      f"{disk}\tfile\t4\t0\t-2\n")
    before = tree(w.root)
    with pytest.raises(RefusedError) as exc:
        mover(w).move_all()
    msg = str(exc.value)
    assert msg.startswith(f"{VZ} is in use: "), msg
    assert {"fd": "pid 4242 (kvm)", "maps": "pid 4242 (kvm)", "cwd": "pid 4242 (bash)",
            "root": "pid 4242 (lxc-init)", "mount": "pid 4242 (init)", "loop": "loop0",
            "swap": "swap"}[how] in msg
    assert "stop or migrate" in msg and "nothing was changed" in msg
    assert w.runner.changes == []
    assert tree(w.root) == before
    assert w.active >= {"pve-cluster.service", "pvescheduler.service"}


def test_a_process_the_move_stops_does_not_count(tmp_path: Path) -> None:
    """pmxcfs has config.db open; it is pve-cluster.service, which the move stops."""
    w = old_install(tmp_path)
    w.hold(777, "pmxcfs", fd=str(w.live(PC) / "config.db"), unit="pve-cluster.service")
    w.hold(778, "pvedaemon worker", cwd=str(w.live(PC)), unit="pvedaemon.service")
    (w.proc / "4242").mkdir()  # a process that exited while it was looked at
    mover(w).move_all()
    assert_consistent(w)


def test_a_holder_that_appears_after_the_stop_is_refused_and_the_be_keeps_it_all(
        tmp_path: Path) -> None:
    w = old_install(tmp_path)

    def step(name: str) -> None:
        if name == f"copy {VZ}":  # a VM started by hand after the check
            w.hold(4243, "kvm", fd=_disk(w))
    with pytest.raises(RefusedError, match=r"in use: pid 4243 \(kvm\)"):
        mover(w, step=step).move_all()
    assert ("cp", "-a") not in [c[:2] for c in w.runner.changes]
    assert w.ds["rpool/var-lib-vz"]["canmount"] == "noauto"
    assert w.active >= {"pvescheduler.service"}
    assert (w.live(VZ) / "dump").is_dir() and not w.live(VZ).is_symlink()


@pytest.mark.parametrize("change", ["same-size", "grown", "new", "gone", "chmod"])
def test_a_file_changed_during_the_copy_rejects_the_move(tmp_path: Path, change: str) -> None:
    """A write between the copy and the verify (the hook stands for a guest writing during
    the copy): rejected, the dataset never switched on, the original in place and used."""
    w = old_install(tmp_path)
    dump = w.live(VZ) / "dump/vzdump-qemu-100.vma.zst"

    def step(name: str) -> None:
        if name == f"verify {VZ}":
            if change == "same-size":
                st = dump.stat()
                dump.write_bytes(b"B" + dump.read_bytes()[1:])
                os.utime(dump, ns=(st.st_atime_ns, st.st_mtime_ns))  # only ctime tells
            elif change == "grown":
                with dump.open("ab") as f:
                    f.write(b"more")
            elif change == "new":
                (w.live(VZ) / "dump/new.log").write_text("x")
            elif change == "gone":
                (w.live(VZ) / "template/iso/a.iso").unlink()
            else:
                dump.chmod(0o600)
    with pytest.raises(RefusedError, match=f"{VZ} changed during the copy"):
        mover(w, step=step).move_all()
    assert w.ds["rpool/var-lib-vz"]["canmount"] == "noauto"
    assert not w.live(VZ).is_symlink(), "the new dataset was mounted"
    assert (w.live(VZ) / "dump").is_dir()
    assert w.active >= {"pvescheduler.service"}
    mover(w).move_all()  # nothing writes any more: the re-run moves it
    assert (w.live(VZ) / "dump").is_dir() and w.live(VZ).is_symlink()


def test_verify_refuses_a_copy_whose_mtime_differs(tmp_path: Path) -> None:
    src, dst = tmp_path / "a", tmp_path / "b"
    src.mkdir()
    dst.mkdir()
    (src / "x").write_text("12")
    before = statecopy.snapshot(src, ())
    shutil.copy2(src / "x", dst / "x")
    statecopy.verify_copy(src, dst, [], before=before)
    os.utime(dst / "x", ns=(0, 0))
    with pytest.raises(RefusedError, match="differs"):
        statecopy.verify_copy(src, dst, [], before=before)


def test_empty_under_never_follows_a_link(tmp_path: Path) -> None:
    """The old copy is reached component by component without following links: a link put
    in the way (or inside) is not gone through, its target is left alone."""
    new = tmp_path / "new"
    (new / "dump").mkdir(parents=True)
    (new / "dump/x").write_text("the verified copy")
    top = tmp_path / "bind"
    (top / "var/lib").mkdir(parents=True)
    (top / "var/lib/vz").symlink_to(new)
    with pytest.raises(RefusedError, match="/var/lib/vz is a symbolic link"):
        statecopy.empty_under(top, VZ)
    assert (new / "dump/x").read_text() == "the verified copy"
    (top / "var/lib/vz").unlink()
    (top / "var/lib/vz/sub").mkdir(parents=True)
    (top / "var/lib/vz/sub/f").write_text("old")
    (top / "var/lib/vz/link").symlink_to(new)
    (top / "var/lib/vz/sub/dlink").symlink_to(new / "dump")
    statecopy.empty_under(top, VZ)
    assert list((top / "var/lib/vz").iterdir()) == []
    assert (new / "dump/x").read_text() == "the verified copy"
    statecopy.empty_under(top, "/var/lib/none")  # nothing there: nothing to do
