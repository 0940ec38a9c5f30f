"""Shared Proxmox state on real OpenZFS (lab VM): ``beadm.statemove.Mover`` moves
``/var/lib/pve-cluster`` (a live SQLite file in WAL mode), ``/var/lib/vz``,
``/var/lib/pve-manager`` and ``/etc/corosync`` out of BE pve-1 into shared datasets; a second
BE sees the same data; a SIGKILL at a step followed by a re-run loses nothing.

The pool has altroot ``/mnt/lab`` (``/`` in the VM is not ZFS), so the mover runs with
``root_dir=/mnt/lab``. The lab VM has no systemd: :class:`LabRunner` is the real runner
except for ``systemctl``, which it answers for a stand-in pve-cluster.service
(``fake_pmxcfs.py``, a process writing committed rows into ``config.db``): ``stop`` kills
it (SIGTERM: its WAL stays behind, as after a crash), ``start`` starts it on whatever is
at the path then.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path

import pytest
from labpool import create_pool

from beadm import pvestate, statedropins, statemove
from beadm.errors import RefusedError
from beadm.runner import Result, SubprocessRunner

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"  # for the killed child (run as a script: no pytest pythonpath)

POOL = "rpool"
ROOT = f"{POOL}/ROOT"
ALT = "/mnt/lab"
DB = f"{ALT}/var/lib/pve-cluster/config.db"
PIDFILE = Path("/run/fake-pve-cluster.pid")
ROWLOG = Path("/run/fake-pve-cluster.rows")
UNIT = "pve-cluster.service"
DROPIN = f"etc/systemd/system/{UNIT}.d/{statedropins.DROPIN_NAME}"


def sh(*argv: str) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr}")
    return res.stdout


def _alive(pid: int) -> bool:
    """Running (a zombie, not yet reaped by a parent that is not us, counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _pid() -> int | None:
    try:
        pid = int(PIDFILE.read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def start_writer() -> None:
    if _pid() is not None:
        return
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fake_pmxcfs.py"), DB, str(ROWLOG)],
        start_new_session=True, stdin=subprocess.DEVNULL,
    )
    PIDFILE.write_text(str(proc.pid))
    deadline = time.monotonic() + 30
    while _rows_logged() == 0 or not Path(DB + "-wal").exists():
        assert time.monotonic() < deadline, "fake pmxcfs wrote nothing"
        time.sleep(0.1)


def stop_writer() -> None:
    pid = _pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, "the stand-in pmxcfs does not stop"
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
    PIDFILE.unlink()


def _rows_logged() -> int:
    return len(ROWLOG.read_text().splitlines()) if ROWLOG.exists() else 0


class LabRunner(SubprocessRunner):
    """The real runner; ``systemctl`` is answered for the stand-in pve-cluster.service."""

    def __init__(self) -> None:
        super().__init__()
        self.systemctl: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], *, readonly: bool = False, check: bool = True,
            on_line: object = None) -> Result:
        args = tuple(argv)
        if args[0] != "systemctl":
            return super().run(args, readonly=readonly, check=check)
        self.systemctl.append(args)
        out = ""
        if args[1] == "list-units":
            out = f"{UNIT} loaded active running fake pmxcfs\n" if _pid() else ""
        elif args[1] == "show":
            out = "RequiredBy=\nBoundBy=\n"
        elif args[1] == "stop" and UNIT in args:
            stop_writer()
        elif args[1] == "start" and UNIT in args:
            start_writer()
        return Result(args, 0, out, "")


def _unit_of(pid: int) -> str:
    """No systemd here: the stand-in pmxcfs is pve-cluster.service, the rest nothing."""
    return UNIT if pid == _pid() else ""


def mover(runner: LabRunner, step: object = None) -> statemove.Mover:
    return statemove.Mover(runner, pool=POOL, be_root=ROOT, be_dataset=f"{ROOT}/pve-1",
                          root_dir=ALT, step=step, unit_of=_unit_of)  # type: ignore[arg-type]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pve(pool_disks: list[Path]) -> Iterator[dict[str, str]]:
    """pve-1 (mounted at /mnt/lab) with Proxmox state inside it, pve-2 a clone of it, and
    the stand-in pmxcfs writing config.db. Yields file -> sha256 of the vz files."""
    ROWLOG.unlink(missing_ok=True)
    create_pool(POOL, ALT, pool_disks[0])
    try:
        sh("zfs", "create", "-o", "canmount=off", "-o", "mountpoint=/rpool/ROOT", ROOT)
        sh("zfs", "create", "-o", "canmount=noauto", "-o", "mountpoint=/", f"{ROOT}/pve-1")
        sh("zfs", "mount", f"{ROOT}/pve-1")
        alt = Path(ALT)
        for d in ("var/lib/pve-cluster", "var/lib/vz/dump", "var/lib/vz/template/iso",
                  "var/lib/pve-manager", "etc/corosync"):
            (alt / d).mkdir(parents=True)
        files = {
            "var/lib/vz/dump/x.vma.zst": os.urandom(3 << 20),
            "var/lib/vz/template/iso/a.iso": os.urandom(1 << 20),
            "var/lib/pve-manager/pve-replication-state.json": b"{}\n",
            "etc/corosync/corosync.conf": b"totem {\n  cluster_name: lab\n}\n",
        }
        for rel, data in files.items():
            (alt / rel).write_bytes(data)
        (alt / "var/lib/vz/backups").symlink_to("dump")
        with closing(sqlite3.connect(DB)) as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("CREATE TABLE tree (id INTEGER PRIMARY KEY, t TEXT)")
            c.executemany("INSERT INTO tree (t) VALUES (?)", [(f"seed {i}",) for i in range(100)])
            c.commit()
        sh("zfs", "snapshot", "-r", f"{ROOT}/pve-1@s")
        sh("zfs", "clone", "-o", "canmount=noauto", "-o", "mountpoint=/",
           f"{ROOT}/pve-1@s", f"{ROOT}/pve-2")
        start_writer()
        yield {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
    finally:
        stop_writer()
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)


def rows(db: str) -> dict[int, str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        return dict(c.execute("SELECT id, t FROM tree"))


def check_moved(files: dict[str, str]) -> None:
    """Everything in the shared datasets, mounted, marks cleared, old copies gone, the
    writer running on the new config.db with every row it ever committed."""
    mounted = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mounted[left.split()[4]] = right.split()[1]
    for sp in pvestate.SHARED:
        ds = pvestate.dataset_for(POOL, sp.path)
        got = sh("zfs", "get", "-H", "-o", "value",
                 "canmount,mountpoint,mounted,org.beadm:state,org.beadm:restart", ds).split()
        assert got == ["on", ALT + sp.path, "yes", "-", "-"], (ds, got)
        assert mounted[ALT + sp.path] == ds
    for rel, want in files.items():
        assert digest(Path(ALT, rel)) == want, rel
    assert str(Path(ALT, "var/lib/vz/backups").readlink()) == "dump"
    assert _pid() is not None, "the stand-in pve-cluster was not started again"
    n = _rows_logged()
    deadline = time.monotonic() + 30
    while _rows_logged() < n + 5:  # it writes into the new dataset
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stop_writer()
    have = rows(DB)
    logged = dict(line.split(" ", 1) for line in ROWLOG.read_text().splitlines())
    lost = {int(k): v for k, v in logged.items() if have.get(int(k)) != v}
    assert not lost, f"committed rows lost: {sorted(lost)[:5]}"
    assert all(have[i + 1] == f"seed {i}" for i in range(100))
    # the old copies are gone from pve-1 (seen under the new mounts through a bind mount)
    tmp = "/run/lab-bind"
    Path(tmp).mkdir(exist_ok=True)
    sh("mount", "--bind", ALT, tmp)
    try:
        for sp in pvestate.SHARED:
            assert list(Path(tmp + sp.path).iterdir()) == [], sp.path
    finally:
        sh("umount", tmp)
    assert Path(ALT, DROPIN).read_text() == statedropins.dropins({"/var/lib/pve-cluster",
                                                              "/etc/corosync"})[UNIT]
    # a second move finds everything shared and changes nothing
    runner = LabRunner()
    found = mover(runner).move_all()
    assert {f.kind for f in found} == {pvestate.SHARED_OK}


def check_second_be_sees_it(files: dict[str, str]) -> None:
    before = rows(DB)
    for sp in reversed(pvestate.SHARED):
        sh("zfs", "unmount", pvestate.dataset_for(POOL, sp.path))
    sh("zfs", "unmount", f"{ROOT}/pve-1")
    sh("zfs", "mount", f"{ROOT}/pve-2")
    # pve-2's own stale copy is there until the shared datasets mount over it, as at boot
    assert Path(ALT, "var/lib/vz/dump/x.vma.zst").exists()
    sh("zfs", "mount", "-a")
    assert rows(DB) == before
    for rel, want in files.items():
        assert digest(Path(ALT, rel)) == want, rel
    assert Path(ALT, DROPIN).is_file(), "pve-2 lacks the drop-in"
    assert "AssertPathIsMountPoint=/var/lib/pve-cluster" in Path(ALT, DROPIN).read_text()


def test_move_shared_state_and_second_be_sees_it(pve: dict[str, str]) -> None:
    runner = LabRunner()
    before = mover(runner).findings()
    assert {f.path: f.kind for f in before} == {sp.path: pvestate.INSIDE
                                                for sp in pvestate.SHARED}
    t0 = time.monotonic()
    mover(runner).move_all()
    print(f"move took {time.monotonic() - t0:.1f} s")
    assert ("systemctl", "stop", UNIT) in runner.systemctl
    assert runner.systemctl[-1] == ("systemctl", "start", UNIT)
    check_moved(pve)
    check_second_be_sees_it(pve)


def _killed_at(step: str) -> None:
    """Run the move in a child process that SIGKILLs itself at ``step``."""
    env = dict(os.environ, PYTHONPATH=f"{SRC}:{HERE}")
    res = subprocess.run([sys.executable, __file__, "kill-at", step], env=env,
                         capture_output=True, text=True, check=False)
    assert res.returncode == -signal.SIGKILL, (res.returncode, res.stderr)


@pytest.mark.parametrize("step", ["verify /var/lib/pve-cluster", "remove-old /var/lib/vz",
                                  "switch /etc/corosync", "drop-ins", "start"])
def test_kill_at_a_step_then_rerun_loses_nothing(pve: dict[str, str], step: str) -> None:
    _killed_at(step)
    # the killed run left its mark
    marks = sh("zfs", "get", "-H", "-o", "value", "-r", "org.beadm:state", POOL).split()
    assert {pvestate.STATE_MOVING, pvestate.STATE_REMOVING} & set(marks)
    found = mover(LabRunner()).move_all()
    assert pvestate.PENDING in {f.kind for f in found}
    check_moved(pve)
    check_second_be_sees_it(pve)


# -- what must not move (issue 23) ------------------------------------------------------------


def _state() -> tuple[str, dict[str, str]]:
    """The pool's datasets with the properties the move sets, and the vz files' digests (no
    link followed)."""
    props = sh("zfs", "list", "-H", "-r", "-o",
               "name,canmount,mountpoint,mounted,org.beadm:state", POOL)
    files = {}
    top = Path(ALT, "var/lib/vz")
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            files[str(p.relative_to(top))] = (
                f"-> {p.readlink()}" if p.is_symlink() else digest(p) if p.is_file() else "dir")
    return props, files


def _refused(match: str) -> str:
    runner = LabRunner()
    before = _state()
    with pytest.raises(RefusedError, match=match) as exc:
        mover(runner).move_all()
    assert _state() == before, "the refused move changed something"
    assert ("systemctl", "stop", UNIT) not in runner.systemctl
    assert _pid() is not None
    return str(exc.value)


def test_symlinked_var_lib_vz_refused_with_nothing_changed(pve: dict[str, str]) -> None:
    """/var/lib/vz -> ../../data/vz: zfs mount would follow the link and the removal of the
    old copy would empty the new dataset through it."""
    alt = Path(ALT)
    (alt / "data").mkdir()
    (alt / "var/lib/vz").rename(alt / "data/vz")
    (alt / "var/lib/vz").symlink_to("../../data/vz")
    msg = _refused("/var/lib/vz is a symbolic link")
    print(msg)
    assert [d for d in _state()[0].splitlines() if "var-lib" in d or "etc-" in d] == []
    for rel, want in pve.items():
        if rel.startswith("var/lib/vz/"):
            assert digest(alt / "data/vz" / rel.removeprefix("var/lib/vz/")) == want


@pytest.mark.parametrize("how", ["process", "loop"])
def test_file_in_use_refused_with_nothing_changed(pve: dict[str, str], how: str) -> None:
    """A running VM's disk (a process holding it open) or a container's raw root file system
    (a loop device, held by the kernel) under /var/lib/vz/images."""
    disk = Path(ALT, "var/lib/vz/images/100/vm-100-disk-0.raw")
    disk.parent.mkdir(parents=True)
    with disk.open("wb") as f:
        f.truncate(4 << 20)
    holder: subprocess.Popen[bytes] | None = None
    loop = ""
    if how == "process":
        with disk.open("rb") as f:
            holder = subprocess.Popen(["sleep", "600"], stdin=f)
    else:
        subprocess.run(["modprobe", "loop"], check=False)  # lab-init loads zfs and 9p only
        loop = sh("losetup", "--find", "--show", str(disk)).strip()
    try:
        msg = _refused("/var/lib/vz is in use: ")
        print(msg)
        who = f"pid {holder.pid} (sleep) (open {disk})" if holder else f"{Path(loop).name} "
        assert who in msg
        assert "nothing was changed" in msg
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        if loop:
            sh("losetup", "-d", loop)
    # once nothing holds it the move goes ahead
    mover(LabRunner()).move_all()
    check_moved(pve)


def test_file_changed_during_the_copy_rejected(pve: dict[str, str]) -> None:
    """A write of the same size with the mtime put back (only the ctime tells) between the
    copy and the verify: rejected, the new dataset never switched on, the original used."""
    dump = Path(ALT, "var/lib/vz/dump/x.vma.zst")

    def write(name: str) -> None:
        if name == "verify /var/lib/vz":
            st = dump.stat()
            with dump.open("r+b") as f:
                first = f.read(1)
                f.seek(0)
                f.write(bytes([first[0] ^ 0xFF]))
            os.utime(dump, ns=(st.st_atime_ns, st.st_mtime_ns))

    runner = LabRunner()
    with pytest.raises(RefusedError, match="/var/lib/vz changed during the copy"):
        mover(runner, step=write).move_all()
    ds = pvestate.dataset_for(POOL, "/var/lib/vz")
    got = sh("zfs", "get", "-H", "-o", "value", "canmount,mounted,org.beadm:state", ds).split()
    assert got == ["noauto", "no", "moving"]
    mounted = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert f"{ALT}/var/lib/vz" not in mounted
    assert digest(dump) != pve["var/lib/vz/dump/x.vma.zst"]  # the write is in the original
    assert _pid() is not None, "the stopped units were not started again"
    pve["var/lib/vz/dump/x.vma.zst"] = digest(dump)
    mover(LabRunner()).move_all()  # nothing writes any more: the re-run moves it
    check_moved(pve)


def test_removal_of_the_old_copy_stops_at_a_mount(tmp_path: Path) -> None:
    """statecopy.empty_under never enters another file system (nor follows a link)."""
    from beadm import statecopy

    top = tmp_path / "bind"
    (top / "var/lib/vz/dump").mkdir(parents=True)
    (top / "var/lib/vz/a").write_text("old")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("keep")
    (top / "var/lib/vz/link").symlink_to(elsewhere)
    sh("mount", "-t", "tmpfs", "none", str(top / "var/lib/vz/dump"))
    try:
        (top / "var/lib/vz/dump/backup").write_text("on another file system")
        with pytest.raises(RefusedError, match="dump is another file system"):
            statecopy.empty_under(top, "/var/lib/vz")
        assert (top / "var/lib/vz/dump/backup").read_text() == "on another file system"
        assert (elsewhere / "keep").read_text() == "keep"
    finally:
        sh("umount", str(top / "var/lib/vz/dump"))


if __name__ == "__main__" and sys.argv[1:2] == ["kill-at"]:
    target = sys.argv[2]

    def die(name: str) -> None:
        if name == target:
            os.kill(os.getpid(), signal.SIGKILL)

    mover(LabRunner(), step=die).move_all()
    sys.exit(3)
