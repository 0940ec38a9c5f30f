"""beadm upgrade's world: a fake runner that answers ``chroot DIR ...`` (dpkg-query, apt-get)
and a manager whose chroot enters a recorded fake namespace (be/test_upgrade.py,
floor/test_confined_mounts.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from beadm import aptchroot
from beadm.be import BeManager
from beadm.runner import Result, Runner
from worlds.fakes import FakeRunner, RecordingBackend
from worlds.pool import LIST_TEXT, manager

BEFORE = "base-files\t12.4\tii \nlinux-image-6.1.0-1\t6.1.0-1\tii \nold-tool\t1.0\tii \n" \
    "gone-long-ago\t0.9\trc \n"
AFTER = "base-files\t12.5\tii \nlinux-image-6.1.0-1\t6.1.0-1\tii \n" \
    "linux-image-6.1.0-2\t6.1.0-2\tii \n"


class FakeNamespace:
    log: ClassVar[list[str]] = []

    def __init__(self, runner: Runner) -> None:
        pass

    def enter(self) -> None:
        FakeNamespace.log.append("enter")

    def leave(self) -> None:
        FakeNamespace.log.append("leave")


class ChrootRunner(FakeRunner):
    """FakeRunner that answers ``chroot DIR ...``: dpkg-query (before, then after) and
    apt-get (``apt_rc``); mounting the clone's root dataset fills it from ``tree``."""

    #: apt's output when it fails (stdout, stderr)
    APT_FAILS = ("Reading package lists...\n", "W: a warning\nE: Sub-process /usr/bin/dpkg "
                 "returned an error code (1)\nN: a note\n")

    def __init__(self, *, dry_run: bool = False, apt_rc: int = 0,
                 tree: Sequence[str] = ("etc/kernel/proxmox-boot-uuids",)) -> None:
        super().__init__(dry_run=dry_run)
        self.apt_fails = self.APT_FAILS
        self.apt_rc = apt_rc
        self.tree = tree
        self.queries = [BEFORE, AFTER]
        self.seen_during_apt: dict[str, bool] = {}

    def run(self, argv: Sequence[str], *, readonly: bool = False, check: bool = True,
            on_line: Callable[[str], None] | None = None) -> Result:
        args = tuple(argv)
        if args[:3] == ("mount", "-t", "zfs") and args[-1].endswith("/root") \
                and not self.dry_run:
            for rel in self.tree:
                p = Path(args[-1]) / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("uuid-1\n")
        if args[0] != "chroot" or self.dry_run:
            return super().run(argv, readonly=readonly, check=check)
        self.calls.append(args)
        self.changes.append(args)
        root = Path(args[1])
        if args[2] == "dpkg-query":
            return Result(args, 0, self.queries.pop(0), "")
        policy = root / "usr/sbin/policy-rc.d"
        self.seen_during_apt = {"policy": policy.is_file()
                                and "exit 101" in policy.read_text()}
        # what the runner does with on_line: each line as the command prints it
        stdout, stderr = self.apt_fails if self.apt_rc else ("Setting up linux-image-6.1.0-2\n",
                                                             "W: a warning\n")
        self.streamed = on_line is not None
        for line in (stdout + stderr).splitlines():
            if on_line is not None:
                on_line(line)
        if self.apt_rc:
            if check:
                raise AssertionError("apt-get must run with check=False")
            return Result(args, self.apt_rc, stdout, stderr)
        return Result(args, 0, stdout, stderr)


def make(tmp_path: Path, runner: ChrootRunner, *, listing: str = LIST_TEXT,
         backend: RecordingBackend | None = None) -> tuple[BeManager, RecordingBackend, Path]:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    mgr, _, be = manager(tmp_path, runner=runner, listing=listing, backend=backend)
    FakeNamespace.log = []
    mgr._chroot = lambda r, plan: aptchroot.Chroot(  # type: ignore[assignment]
        r, plan, tmp_base=str(run), namespace=FakeNamespace, out=r.out)
    return mgr, be, run


def chroot_dir(runner: FakeRunner) -> str:
    return next(c[-1] for c in runner.calls if c[:3] == ("mount", "-t", "zfs"))
