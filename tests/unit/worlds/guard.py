"""activate's guard world: the running root ``cur`` and the target BE ``old`` as temporary
directories, the fake runner's ``mount`` copying the target in (pve/test_rollback_guard.py,
be/test_watchdog.py)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from beadm.cli import Deps, main
from worlds.fakes import FakeRunner, RecordingBackend, pool_props
from worlds.pool import LIST_ARGV, LIST_FS_ARGV, row, without_snapshots

R = "rpool/ROOT"
RUNNING = f"1 0 0:1 / / rw - zfs {R}/cur rw\n"
SHARED_COROSYNC = RUNNING + "2 1 0:2 / /etc/corosync rw - zfs rpool/etc-corosync rw\n"
LISTING = "".join([
    row(R, canmount="off"),
    row(f"{R}/cur", mountpoint="/", mounted="yes", canmount="on"),
    row(f"{R}/old", mountpoint="/"),
])


HOSTS = "127.0.0.1 localhost\n10.0.0.1 pve1.example.com pve1\n"
IFACES = ("auto lo\niface lo inet loopback\n\nauto vmbr0\niface vmbr0 inet static\n"
          "\taddress 10.0.0.1/24\n\tgateway 10.0.0.254\n")


def write(root: Path, files: dict[str, str | bytes | None]) -> None:
    for path, text in files.items():
        p = root / path.lstrip("/")
        if text is None:
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())


def same_network(root: Path) -> None:
    write(root, {"/etc/hosts": HOSTS, "/etc/hostname": "pve1\n",
                 "/etc/network/interfaces": IFACES})


class World:
    """Running root ``cur`` and the target BE ``old`` as directories."""

    def __init__(self, tmp: Path, mountinfo: str = RUNNING) -> None:
        self.tmp = tmp
        self.cur = tmp / "running"
        self.old = tmp / "be-old"
        self.cur.mkdir()
        self.old.mkdir()
        same_network(self.cur)
        same_network(self.old)
        self.mountinfo = tmp / "mountinfo"
        self.mountinfo.write_text(mountinfo)
        self.mounted: list[str] = []
        self.backend = RecordingBackend()
        self.runners: list[FakeRunner] = []

    def runner(self, dry: bool = False) -> FakeRunner:
        r = FakeRunner(dry_run=dry)
        r.on(*LIST_ARGV, stdout=LISTING)
        r.on(*LIST_FS_ARGV, stdout=without_snapshots(LISTING))
        r.on("zpool", "get", stdout=pool_props(f"{R}/cur"))

        def mount(argv: tuple[str, ...]) -> None:
            assert argv[4] == "ro,zfsutil", "a BE must be looked at read-only"
            self.mounted.append(argv[-2])
            assert argv[-2] == f"{R}/old"
            shutil.copytree(self.old, argv[-1], dirs_exist_ok=True, symlinks=True)

        def umount(argv: tuple[str, ...]) -> None:
            for p in Path(argv[-1]).iterdir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()

        r.on("mount", "-t", "zfs", hook=mount)
        r.on("umount", hook=umount)
        self.runners.append(r)
        return r

    def cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        deps = Deps(
            make_runner=lambda dry, o: self.runner(dry),
            make_backend=lambda name, runner: self.backend,  # type: ignore[arg-type,return-value]
            mountinfo=self.mountinfo, running_root=self.cur, lock_path=self.tmp / "lock",
            lock_wait=0.2, euid=lambda: 0, stdin=io.StringIO(), stdout=out, stderr=err)
        rc = main(list(argv), deps=deps)
        return rc, out.getvalue() + self.runners[-1].out.getvalue(), err.getvalue()

    @property
    def changes(self) -> list[tuple[str, ...]]:
        return [c for r in self.runners for c in r.changes]
