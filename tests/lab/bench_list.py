#!/usr/bin/env python3
"""Benchmark (not a test): ``beadm list`` against bare ``zfs list -t all`` of the same datasets.

Run in the lab VM: ``lab/lab run -- python3 tests/lab/bench_list.py [BES [SNAPS_PER_BE]]``.
Builds a pool on the first blank disk with BES BEs (default 500) under ``rpool/ROOT`` and
SNAPS_PER_BE snapshots each (default 10, so 5000 in all), then prints the median wall time
of each command over a few runs and their ratio. Env: BENCH_RUNS (runs of each, default 3),
BENCH_CASES (comma-separated ``beadm list`` flags, default ``,-H,-s,--json``; empty = none).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

POOL = "rpool"
ROOT = f"{POOL}/ROOT"
SRC = Path(__file__).resolve().parents[2] / "src"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))  # under TCG one run of each can take minutes


def sh(*argv: str) -> None:
    res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} ... failed: {res.stderr.strip()}")


def timed(argv: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    n_bes = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    per_be = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    disk = "/dev/disk/by-id/virtio-pool1"
    sh("zpool", "create", "-f", "-R", "/mnt/bench", "-O", "mountpoint=none", POOL, disk)
    try:
        t0 = time.perf_counter()
        sh("zfs", "create", "-o", "canmount=off", "-o", "mountpoint=/rpool/ROOT", ROOT)
        # concurrent creates share transaction groups: minutes instead of most of an hour
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda i: sh("zfs", "create", "-o", "canmount=noauto", "-o",
                                       "mountpoint=/", f"{ROOT}/be-{i}"), range(n_bes)))
        # one snapshot per filesystem per call (a zfs rule), all BEs at once
        for j in range(per_be):
            sh("zfs", "snapshot", *(f"{ROOT}/be-{i}@s{j}" for i in range(n_bes)))
        snaps = range(n_bes * per_be)
        sh("zpool", "set", f"bootfs={ROOT}/be-0", POOL)
        print(f"setup: {n_bes} BEs, {len(snaps)} snapshots in {time.perf_counter() - t0:.1f}s",
              flush=True)
        zfs = timed(["zfs", "list", "-t", "all", "-r", ROOT])
        print(f"{'zfs list -t all -r rpool/ROOT':40s} {zfs * 1000:8.0f} ms", flush=True)
        base = [sys.executable, "-m", "beadm", "--root", ROOT, "--backend", "none", "list"]
        flags = os.environ.get("BENCH_CASES", ",-H,-s,--json").split(",")
        argss = [[f] if f else [] for f in flags]
        cases = [(" ".join(["beadm list", *x]), base + x) for x in argss]
        cases.append(("beadm version (start-up)", [sys.executable, "-m", "beadm", "version"]))
        for what, argv in cases:
            t = timed(argv)
            print(f"{what:40s} {t * 1000:8.0f} ms   ratio {t / zfs:5.2f}", flush=True)
    finally:
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
