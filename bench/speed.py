#!/usr/bin/env python3
"""Benchmark (not a test): each beadm command's wall time next to the bare commands that do
its ZFS part, and their ratio, at a few BEs, 10 and 100 (issue 15). Prints figures, asserts
nothing about time.

Runs as root in the Proxmox-like machine (2 ESPs, systemd-boot), after ``beadm init``:
``lab/pvelab run --timeout 2400 bench/speed-step.sh`` (the step installs the checkout's
beadm on the machine's own disk, byte-compiled as the .deb is, and calls this file).
Arguments: ``--beadm [LABEL=]DIR`` (the PYTHONPATH of a beadm to measure; repeated,
the variants run side by side at each size and a summary compares them), ``--runs K``
(median of K, default 3), ``--sizes 3,10,100`` (BEs under the BE root), ``--profile``
(also the per-command profile: imports, external commands, cProfile).

Where the BEs come from: ``pve-1`` (running, ``beadm init`` done) and ``pve-2`` (made by
``beadm create``, so it has its ESP entries) are the real ones; the sizes above that are
filled with bare ZFS clones of a snapshot of pve-1 marked as beadm marks its BEs
(``canmount=noauto``, the clone of pve-1's mountpoint ``/``) but WITHOUT boot entries
on the ESPs: they cost what they cost in ZFS (``zfs list``, guards that mount them), not
in ESP bytes (``tests/lab/bench_esp.py`` measures those).

Bare equivalents (what the ZFS part of each command is, as argv beadm runs):
- version: ``python3 -c pass`` (the interpreter's start);
- list (-H, --json): ``zfs list -t all -r rpool/ROOT``;
- create: ``zfs snapshot -r -o org.beadm:state=creating``, ``zfs clone -o canmount=noauto
  -o org.beadm:state=creating``, ``zfs inherit org.beadm:state`` of both;
- activate (a BE that is not running / the running one): ``zpool set bootfs``, ``zfs set
  org.beadm:next`` on the BE root;
- destroy: ``zfs destroy -r`` of the BE, ``zfs destroy`` of its origin snapshot;
- rename: ``zfs set org.beadm:state=renaming:OLD``, ``zfs rename -u``, ``zfs inherit``;
- mount + umount: ``mount -t zfs -o zfsutil`` + ``umount``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

POOL = "rpool"
ROOT = f"{POOL}/ROOT"
RUNNING = "pve-1"
OTHER = "pve-2"
FILL_SNAP = f"{ROOT}/{RUNNING}@bench-fill"
MNT = "/run/bench-mnt"


class Bench:
    def __init__(self, beadm_path: str, runs: int, label: str = "") -> None:
        self.env = dict(os.environ, PYTHONPATH=beadm_path)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.runs = runs
        self.label = label
        self.rows: list[tuple[int, str, float, str, float]] = []
        self.size = 0
        self.serial = 0

    def sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             env=self.env)
        if check and res.returncode != 0:
            raise SystemExit(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")
        return res

    def beadm(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "beadm", *args]

    def time_one(self, steps: Sequence[Sequence[str]]) -> float:
        start = time.perf_counter()
        for argv in steps:
            self.sh(*argv)
        return time.perf_counter() - start

    def median(self, make: Callable[[int], Sequence[Sequence[str]]],
               after: Callable[[int], None] | None = None) -> float:
        """Median over the runs of the steps ``make(i)`` gives (``after(i)`` untimed)."""
        times = []
        for _ in range(self.runs):
            self.serial += 1
            i = self.serial
            times.append(self.time_one(make(i)))
            if after is not None:
                after(i)
        return statistics.median(times)

    def row(self, what: str, t: float, bare: str, tb: float) -> None:
        self.rows.append((self.size, what, t, bare, tb))
        print(f"  {what:34s} {t * 1000:7.0f} ms | {bare:38s} {tb * 1000:6.0f} ms | "
              f"ratio {t / tb:5.2f}", flush=True)

    # -- the commands ----------------------------------------------------------------------
    def run_size(self, n: int) -> None:
        self.size = n
        print(f"\n== {self.label}: {n} BEs under {ROOT} ({self.runs} runs each, median) ==",
              flush=True)
        py = self.median(lambda i: [[sys.executable, "-c", "pass"]])
        self.row("beadm version", self.median(lambda i: [self.beadm("version")]),
                 "python3 -c pass", py)
        zl = self.median(lambda i: [["zfs", "list", "-t", "all", "-r", ROOT]])
        for flags in ([], ["-H"], ["--json"]):
            # --json looks into every BE (a mount each): at 100 BEs one run is minutes
            once = flags == ["--json"] and n >= 50
            runs, self.runs = self.runs, (1 if once else self.runs)
            t = self.median(lambda i, f=flags: [self.beadm("list", *f)])  # type: ignore[misc]
            self.runs = runs
            what = " ".join(["beadm list", *flags]) + (" (1 run)" if once else "")
            self.row(what, t, "zfs list -t all -r ROOT", zl)

        src = f"{ROOT}/{RUNNING}"
        bare: list[int] = []
        tcb = self.median(lambda i: [
            ["zfs", "snapshot", "-r", "-o", "org.beadm:state=creating", f"{src}@bare-{i}"],
            ["zfs", "clone", "-o", "canmount=noauto", "-o", "mountpoint=/", "-o",
             "org.beadm:state=creating", f"{src}@bare-{i}", f"{ROOT}/bare-{i}"],
            ["zfs", "inherit", "org.beadm:state", f"{src}@bare-{i}"],
            ["zfs", "inherit", "org.beadm:state", f"{ROOT}/bare-{i}"]], after=bare.append)
        made: list[int] = []
        tc = self.median(lambda i: [self.beadm("create", f"bench-{i}")], after=made.append)
        self.row("beadm create", tc, "zfs snapshot+clone+2 inherit", tcb)

        it_bare, it_made = iter(bare), iter(made)
        tdb = self.median(lambda i: (lambda k: [
            ["zfs", "destroy", "-r", f"{ROOT}/bare-{k}"],
            ["zfs", "destroy", f"{src}@bare-{k}"]])(next(it_bare)))
        td = self.median(lambda i: [self.beadm("destroy", "-F", f"bench-{next(it_made)}")])
        self.row("beadm destroy -F", td, "zfs destroy -r + origin snap", tdb)

        def renamer(names: list[str], bare: bool) -> Callable[[int], list[list[str]]]:
            cur = [0]

            def steps(i: int) -> list[list[str]]:
                old, new = names[cur[0]], names[1 - cur[0]]
                cur[0] = 1 - cur[0]
                if not bare:
                    return [self.beadm("rename", old, new)]
                return [["zfs", "set", f"org.beadm:state=renaming:{old}", f"{ROOT}/{old}"],
                        ["zfs", "rename", "-u", f"{ROOT}/{old}", f"{ROOT}/{new}"],
                        ["zfs", "inherit", "org.beadm:state", f"{ROOT}/{new}"]]
            steps.last = lambda: names[cur[0]]  # type: ignore[attr-defined]
            return steps

        k = self.serial
        self.sh(*self.beadm("create", f"ren-{k}"))
        self.sh("zfs", "snapshot", f"{src}@bare-ren-{k}")
        self.sh("zfs", "clone", "-o", "canmount=noauto", "-o", "mountpoint=/",
                f"{src}@bare-ren-{k}", f"{ROOT}/bare-ren-{k}")
        ren = renamer([f"ren-{k}", f"ren-{k}-b"], False)
        ren_bare = renamer([f"bare-ren-{k}", f"bare-ren-{k}-b"], True)
        tr = self.median(ren)
        trb = self.median(ren_bare)
        self.row("beadm rename", tr, "zfs set+rename -u+inherit", trb)
        self.sh(*self.beadm("destroy", "-F", ren.last()))  # type: ignore[attr-defined]
        self.sh("zfs", "destroy", "-r", f"{ROOT}/{ren_bare.last()}")  # type: ignore[attr-defined]
        self.sh("zfs", "destroy", f"{src}@bare-ren-{k}")

        def bare_activate(be: str) -> list[list[str]]:
            return [["zpool", "set", f"bootfs={ROOT}/{be}", POOL],
                    ["zfs", "set", f"org.beadm:next={be}", ROOT]]

        ta_other: list[float] = []
        ta_run: list[float] = []
        for _ in range(self.runs):
            ta_other.append(self.time_one([self.beadm("activate", OTHER)]))
            ta_run.append(self.time_one([self.beadm("activate", RUNNING)]))
        tab = self.median(lambda i: bare_activate(OTHER if i % 2 else RUNNING))
        self.sh(*self.beadm("activate", RUNNING))
        self.row(f"beadm activate {OTHER} (not running)", statistics.median(ta_other),
                 "zpool set bootfs + zfs set", tab)
        self.row(f"beadm activate {RUNNING} (running)", statistics.median(ta_run),
                 "zpool set bootfs + zfs set", tab)

        Path(MNT).mkdir(parents=True, exist_ok=True)
        tm = self.median(lambda i: [self.beadm("mount", OTHER, MNT), self.beadm("umount", OTHER)])
        tmb = self.median(lambda i: [["mount", "-t", "zfs", "-o", "zfsutil", f"{ROOT}/{OTHER}",
                                      MNT], ["umount", MNT]])
        self.row("beadm mount + umount", tm, "mount -t zfs + umount", tmb)

    # -- the profile -----------------------------------------------------------------------
    def profile(self) -> None:
        print(f"\n== {self.label}: profile (one run each; beadm -v's runner timing log, "
              "-X importtime, cProfile) ==", flush=True)
        start = statistics.median(
            [self.time_one([[sys.executable, "-c", "pass"]]) for _ in range(3)])
        print(f"  interpreter start (python3 -c pass): {start * 1000:.0f} ms")
        self.serial += 1
        cases = [
            ("version", ["version"]),
            ("list", ["list"]),
            ("list --json", ["list", "--json"]),
            ("create", ["create", f"prof-{self.serial}"]),
            (f"activate {OTHER}", ["activate", OTHER]),
            (f"activate {RUNNING}", ["activate", RUNNING]),
            ("destroy", ["destroy", "-F", f"prof-{self.serial}"]),
        ]
        for what, args in cases:
            self._profile_one(what, args, start)

    def _profile_one(self, what: str, args: list[str], start: float) -> None:
        argv = [sys.executable, "-X", "importtime", "-m", "beadm", "-v", *args]
        t0 = time.perf_counter()
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             env=self.env)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            print(f"  {what}: exit {res.returncode}: {res.stderr.strip()[-300:]}")
            return
        imports, top = _imports(res.stderr)
        cmds = _commands(res.stderr)
        ext = sum(t for _, t in cmds)
        print(f"\n  -- beadm {what}: wall {wall * 1000:.0f} ms = start ~{start * 1000:.0f} + "
              f"imports {imports * 1000:.0f} + {len(cmds)} external commands "
              f"{ext * 1000:.0f} + the rest {max(0.0, wall - start - imports - ext) * 1000:.0f}"
              " (python work, file I/O, fsync, hashing; importtime's own overhead included)")
        print("     slowest imports (self): " + ", ".join(
            f"{m} {t * 1000:.0f}" for m, t in top[:8]))
        groups: dict[str, list[float]] = {}
        for cmd, t in cmds:
            groups.setdefault(_kind(cmd), []).append(t)
        for kind, ts in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
            print(f"     {len(ts):3d} x {kind:28s} {sum(ts) * 1000:6.0f} ms")
        if what in ("list", "create", f"activate {OTHER}", "list --json"):
            self._cprofile(what, args)

    def _cprofile(self, what: str, args: list[str]) -> None:
        if what == "create":  # the profiled create made the BE already: make another
            args = ["create", f"prof-c-{self.serial}"]
        with tempfile.NamedTemporaryFile(suffix=".prof") as f:
            argv = [sys.executable, "-m", "cProfile", "-o", f.name, "-m", "beadm", *args]
            res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, env=self.env)
            if res.returncode != 0:
                print(f"     cProfile run failed: {res.stderr.strip()[-200:]}")
                return
            import io
            import pstats
            buf = io.StringIO()
            pstats.Stats(f.name, stream=buf).sort_stats("cumulative").print_stats(
                r"beadm/(?!cli/__init__\.py:\d+\(main\))|hashlib|fsync|subprocess.py.*\(run\)", 14)
            lines = [ln for ln in buf.getvalue().splitlines() if re.match(r"\s+\d", ln)]
            print("     cProfile, cumulative (ncalls tottime percall cumtime percall where):")
            for ln in lines[:14]:
                print("       " + ln.strip()[:150])
            buf = io.StringIO()  # where the interpreter itself spends it (any module)
            pstats.Stats(f.name, stream=buf).sort_stats("tottime").print_stats(8)
            lines = [ln for ln in buf.getvalue().splitlines() if re.match(r"\s+\d", ln)]
            print("     cProfile, own time (ncalls tottime percall cumtime percall where):")
            for ln in lines[:8]:
                print("       " + ln.strip()[:150])
        if what == "create":
            self.sh(*self.beadm("destroy", "-F", f"prof-c-{self.serial}"))

    # -- filling the BE root ---------------------------------------------------------------
    def fill(self, n: int) -> None:
        """Bare clones (see the module doc) until ``n`` BEs are under the BE root."""
        have = len(self._bes())
        if n <= have:
            return
        t0 = time.perf_counter()
        if self.sh("zfs", "list", FILL_SNAP, check=False).returncode != 0:
            self.sh("zfs", "snapshot", FILL_SNAP)
        todo = [f"{ROOT}/fill-{k:03d}" for k in range(have, n)]
        with ThreadPoolExecutor(max_workers=8) as ex:
            list(ex.map(lambda ds: self.sh("zfs", "clone", "-o", "canmount=noauto", "-o",
                                           "mountpoint=/", FILL_SNAP, ds), todo))
        print(f"\n(filled to {n} BEs with {len(todo)} bare clones in "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)

    def _bes(self) -> list[str]:
        out = self.sh("zfs", "list", "-H", "-o", "name", "-d", "1", ROOT).stdout.split()
        return [x for x in out if x != ROOT]


def _imports(stderr: str) -> tuple[float, list[tuple[str, float]]]:
    """(total import time, [(module, self time)] slowest first) from -X importtime."""
    total = 0.0
    selfs: list[tuple[str, float]] = []
    seen_beadm = False  # what the interpreter imports at start (site, encodings) is not ours
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        seen_beadm = seen_beadm or m.group(4).startswith("beadm")
        if not seen_beadm:
            continue
        if len(m.group(3)) == 1:  # a top-level import
            total += int(m.group(2)) / 1e6
        selfs.append((m.group(4), int(m.group(1)) / 1e6))
    selfs.sort(key=lambda x: -x[1])
    return total, selfs


def _commands(stderr: str) -> list[tuple[str, float]]:
    """(argv, seconds) of every external command, from the runner's ``took`` lines."""
    out = []
    for line in stderr.splitlines():
        m = re.match(r"beadm: took (\d+\.\d+)s: (.*)", line)
        if m:
            out.append((m.group(2), float(m.group(1))))
    return out


def _kind(cmd: str) -> str:
    w = cmd.split()
    if w[0] in ("zfs", "zpool") and len(w) > 1:
        return f"{w[0]} {w[1]}"
    if w[0] == "mount":
        return "mount " + ("vfat (ESP)" if "vfat" in w else "zfs (BE)" if "zfs" in w
                           else " ".join(w[1:2]))
    return w[0]


def summary(benches: list[Bench]) -> None:
    """Every variant side by side: its time and its ratio to the bare commands."""
    print("\n== summary: beadm ms (ratio to the bare commands) ==")
    keys: list[tuple[int, str]] = []
    for b in benches:
        keys += [(r[0], r[1]) for r in b.rows if (r[0], r[1]) not in keys]
    head = f"{'BEs':>4} {'command':34s} {'bare ms':>8}"
    print(head + "".join(f" {b.label:>18s}" for b in benches))
    for size, what in keys:
        cells = []
        bare = float("nan")
        for b in benches:
            got = [r for r in b.rows if (r[0], r[1]) == (size, what)]
            if got:
                bare = got[0][4]
                cells.append(f"{got[0][2] * 1000:8.0f} ({got[0][2] / got[0][4]:5.2f}x)")
            else:
                cells.append(f"{'-':>18s}")
        print(f"{size:4d} {what:34s} {bare * 1000:8.0f}" + "".join(f" {c:>18s}" for c in cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beadm", required=True, action="append", metavar="[LABEL=]PATH",
                    help="PYTHONPATH of a beadm to measure (repeat: side by side, each "
                         "command of each at each size)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="3,10,100")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    benches = []
    for k, spec in enumerate(a.beadm):
        label, _, path = spec.rpartition("=")
        benches.append(Bench(path, max(2, a.runs), label or path))
        benches[-1].serial = 1000 * k  # names of their BEs and snapshots never meet
    sizes = [int(x) for x in a.sizes.split(",") if x]
    t0 = time.perf_counter()
    for b in benches:
        b.sh(*b.beadm("list"))  # warm the page cache once
    if a.profile:
        for b in benches:
            b.profile()
    for n in sizes:
        benches[0].fill(n)
        for b in benches:
            b.run_size(len(b._bes()))
    summary(benches)
    print(f"\n(benchmark took {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
