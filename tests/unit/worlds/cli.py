"""The command line over the unit tests' fake pool: :func:`run` is ``beadm ARGV`` through
``beadm.cli.main`` with every dependency a fake."""

from __future__ import annotations

import io
from pathlib import Path

from beadm.backend import BootState
from beadm.cli import Deps, main
from worlds.fakes import FakeRunner, RecordingBackend, pool_props
from worlds.pool import GET_TEXT, LIST_ARGV, LIST_FS_ARGV, LIST_TEXT, MOUNTINFO, without_snapshots


class Tty(io.StringIO):
    """A stream that says it is a terminal (stdin of a prompt, stderr of progress lines)."""

    def isatty(self) -> bool:
        return True


def run(
    tmp_path: Path, *argv: str, euid: int = 0, stdin: io.StringIO | None = None,
    listing: str = LIST_TEXT, state: BootState | None = None, backend: object = None,
    tty: bool = False,
) -> tuple[int, str, str, FakeRunner]:
    """``beadm ARGV`` through ``cli.main`` over the fake pool (``listing``) with a recording
    backend (boot state ``state``) or ``backend``: (exit status, stdout with a dry run's
    plan, stderr, the runner). ``tty``: stderr is a terminal."""
    runners: list[FakeRunner] = []

    def make_runner(dry: bool, out: object = None) -> FakeRunner:
        r = FakeRunner(dry_run=dry)
        r.on(*LIST_ARGV, stdout=listing)
        r.on(*LIST_FS_ARGV, stdout=without_snapshots(listing))
        r.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-1"))
        r.on("zfs", "get", "-H", "-p", "-o", "name,property,value,source", stdout=GET_TEXT)
        runners.append(r)
        return r

    mi = tmp_path / "mountinfo"
    mi.write_text(MOUNTINFO)
    out, err = io.StringIO(), Tty() if tty else io.StringIO()
    deps = Deps(
        make_runner=make_runner,
        make_backend=lambda name, runner: backend or RecordingBackend(state),  # type: ignore[arg-type,return-value]
        mountinfo=mi,
        running_root=tmp_path / "running",  # not this machine's /etc (activate's guard)
        lock_path=tmp_path / "lock",
        lock_wait=0.2,
        euid=lambda: euid,
        stdin=stdin if stdin is not None else io.StringIO(),
        stdout=out,
        stderr=err,
    )
    rc = main(list(argv), deps=deps)
    runner = runners[0] if runners else FakeRunner()
    return rc, out.getvalue() + runner.out.getvalue(), err.getvalue(), runner
