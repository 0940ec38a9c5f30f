#!/usr/bin/env python3
"""Which of beadm's modules one ``beadm activate NAME`` walks through (issue 24's measure).

Runs ``activate pve-2`` (a BE that is not running) once through the command line
(``beadm.cli.main`` with the unit tests' fakes: the ZFS listings of tests/unit/worlds/pool.py, the
systemd-boot backend over the directory ESPs of tests/unit/worlds/sdboot.py) under
:func:`sys.setprofile`, and prints:

- the distinct ``beadm.*`` modules whose functions were entered (the bodies of modules and
  classes run by an import are not counted: importing is not entering; the modules the
  command imported are listed apart), with how many calls entered each;
- the crossings: calls from a function of one ``beadm`` module into a function of another,
  in all, those into ``beadm.record`` (the methods every record class shares), and per
  pair (both ways summed), the busiest first.

Usage: ``python3 bench/trace_activate.py [--pairs N]`` from the checkout (stdlib only).
"""

from __future__ import annotations

import argparse
import inspect
import io
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

TOP = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TOP / "src"), str(TOP / "tests" / "unit")]

from beadm.cli import Deps, main  # noqa: E402
from worlds.fakes import FakeRunner, pool_props  # noqa: E402
from worlds.pool import GET_TEXT, LIST_ARGV, LIST_FS_ARGV, LIST_TEXT, MOUNTINFO, without_snapshots  # noqa: E402
from worlds.sdboot import World  # noqa: E402

TARGET = "pve-2"  # not running (the fixture's mountinfo has pve-1 at /)


def _module(frame: FrameType | None) -> str:
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name if isinstance(name, str) and name.split(".")[0] == "beadm" else ""


class Trace:
    def __init__(self) -> None:
        self.entered: Counter[str] = Counter()
        self.crossings: Counter[tuple[str, str]] = Counter()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or not frame.f_code.co_flags & inspect.CO_OPTIMIZED:
            return  # a module's or a class's body: run by an import
        callee = _module(frame)
        if not callee:
            return
        self.entered[callee] += 1
        caller = _module(frame.f_back)
        if caller and caller != callee:
            self.crossings[(caller, callee)] += 1


def setup(tmp: Path) -> Deps:
    """The systemd-boot world with pve-1 running and pve-2 made by beadm (its entries
    written), and the command line's dependencies over it."""
    w = World(tmp / "world")
    w.backend.init(w.ref("pve-1"))
    w.add_be(TARGET, clone_of="pve-1")
    w.backend.post_create(w.ref(TARGET))

    def make_runner(dry: bool, out: TextIO) -> FakeRunner:
        r = FakeRunner(dry_run=dry)
        r.on(*LIST_ARGV, stdout=LIST_TEXT)
        r.on(*LIST_FS_ARGV, stdout=without_snapshots(LIST_TEXT))
        r.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-1"))
        r.on("zfs", "get", "-H", "-p", "-o", "name,property,value,source", stdout=GET_TEXT)
        return r

    (tmp / "mountinfo").write_text(MOUNTINFO)
    (tmp / "running").mkdir()
    return Deps(make_runner=make_runner, make_backend=lambda name, runner: w.backend,
                mountinfo=tmp / "mountinfo", running_root=tmp / "running",
                lock_path=tmp / "lock", lock_wait=0.2, config_path=tmp / "beadm.conf",
                proc=tmp / "noproc", euid=lambda: 0, stdin=io.StringIO(),
                stdout=io.StringIO(), stderr=io.StringIO(), environ={},
                in_chroot=lambda: False)


def main_() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=15, help="module pairs shown (default 15)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="beadm-trace-") as d:
        deps = setup(Path(d))
        before = {m for m in sys.modules if m.split(".")[0] == "beadm"}
        trace = Trace()
        sys.setprofile(trace)
        try:
            rc = main(["activate", TARGET], deps=deps)
        finally:
            sys.setprofile(None)
        imported = sorted(m for m in sys.modules
                          if m.split(".")[0] == "beadm" and m not in before)
        err = deps.stderr.getvalue() if isinstance(deps.stderr, io.StringIO) else ""
    if rc != 0:
        print(f"activate {TARGET} exited {rc}: {err.strip()}", file=sys.stderr)
        return 1
    into_record = sum(n for (_, b), n in trace.crossings.items() if b == "beadm.record")
    print(f"activate {TARGET}: {len(trace.entered)} beadm modules entered, "
          f"{sum(trace.crossings.values())} calls crossed between modules "
          f"({into_record} of them into beadm.record)")
    for mod, n in sorted(trace.entered.items()):
        print(f"  {mod:32} {n:6} calls")
    print(f"imported by the command ({len(imported)}): {' '.join(imported) or '-'}")
    pairs: Counter[tuple[str, str]] = Counter()
    for (a, b), n in trace.crossings.items():
        pairs[(min(a, b), max(a, b))] += n
    print(f"busiest pairs (both ways), {min(args.pairs, len(pairs))} of {len(pairs)}:")
    for (a, b), n in pairs.most_common(args.pairs):
        print(f"  {n:6}  {a} <-> {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main_())
