"""The BE lifecycle on real OpenZFS (lab VM): every command on a Proxmox-like pool.

The pool is built on a blank disk with altroot ``/mnt/lab`` (``/`` in the VM is not ZFS),
and beadm runs with ``--root rpool/ROOT --backend none`` as a subprocess, so these tests
exercise the CLI end to end. The running BE is simulated for the library with a mountinfo
file where it is needed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labpool import create_pool

POOL = "rpool"
ROOT = f"{POOL}/ROOT"
ALT = "/mnt/lab"
SRC = Path(__file__).resolve().parents[2] / "src"


def sh(*argv: str) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr}")
    return res.stdout


def beadm(*args: str) -> subprocess.CompletedProcess[str]:
    """beadm's CLI in this process (an interpreter start costs seconds under TCG)."""
    from beadm.cli import Deps, main

    out, err = io.StringIO(), io.StringIO()
    argv = ["--root", ROOT, "--backend", "none", *args]
    rc = main(argv, deps=Deps(stdin=io.StringIO(), stdout=out, stderr=err))
    return subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())


def beadm_process(*args: str) -> subprocess.CompletedProcess[str]:
    """beadm as its own process (``python3 -m beadm``)."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    argv = [sys.executable, "-m", "beadm", "--root", ROOT, "--backend", "none", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, check=False, env=env, stdin=subprocess.DEVNULL
    )


def ok(*args: str) -> str:
    res = beadm(*args)
    assert res.returncode == 0, f"beadm {' '.join(args)}: {res.returncode} {res.stderr}"
    return res.stdout


#: Space figures move on their own for a while after writes (txg syncs, deferred frees).
VOLATILE = {
    "used",
    "available",
    "referenced",
    "usedbychildren",
    "usedbydataset",
    "usedbysnapshots",
    "usedbyrefreservation",
    "written",
    "logicalused",
    "logicalreferenced",
    "compressratio",
    "refcompressratio",
}


def state() -> str:
    """What ZFS knows about the pool, compared before/after (``zfs list -t all -o all``):
    every property of every dataset and snapshot, except the space figures."""
    sh("zpool", "sync", POOL)
    lines = sh("zfs", "get", "-H", "-p", "-t", "all", "-r", "all", POOL).splitlines()
    return "\n".join(ln for ln in lines if ln.split("\t")[1] not in VOLATILE)


def names() -> set[str]:
    return set(sh("zfs", "list", "-H", "-t", "all", "-o", "name", "-r", POOL).split())


def prop(ds: str, p: str) -> str:
    return sh("zfs", "get", "-H", "-p", "-o", "value", p, ds).strip()


def bes() -> list[str]:
    return [line.split("\t")[0] for line in ok("list", "-H").splitlines()]


@pytest.fixture
def pool(pool_disks: list[Path]) -> Iterator[str]:
    """rpool/ROOT (canmount=off) with BE pve-1 (mountpoint=/, noauto) and pve-1/var."""
    create_pool(POOL, ALT, pool_disks[0])
    try:
        sh("zfs", "create", "-o", "canmount=off", "-o", "mountpoint=/rpool/ROOT", ROOT)
        sh("zfs", "create", "-o", "canmount=noauto", "-o", "mountpoint=/", f"{ROOT}/pve-1")
        sh("zfs", "set", "com.example:site=lab", f"{ROOT}/pve-1")
        sh("zfs", "mount", f"{ROOT}/pve-1")
        sh("zfs", "create", "-o", "compression=zstd", f"{ROOT}/pve-1/var")
        Path(ALT, "etc").mkdir()
        Path(ALT, "etc/marker").write_text("pve-1 root\n")
        Path(ALT, "var/marker").write_text("pve-1 var\n")
        sh("zfs", "unmount", f"{ROOT}/pve-1/var")
        sh("zfs", "unmount", f"{ROOT}/pve-1")
        sh("zfs", "set", "canmount=noauto", f"{ROOT}/pve-1/var")
        sh("zpool", "set", f"bootfs={ROOT}/pve-1", POOL)
        yield POOL
    finally:
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)


def test_capture_real_zfs_output(pool: str) -> None:
    """Print real ``zfs list``/``zfs get`` output (copied into the unit fixtures)."""
    ok("create", "-d", "captured", "pve-2")
    ok("create", "pve-1@manual")
    from beadm.zfs import LIST_COLUMNS

    print("=== zfs list ===")
    print(sh("zfs", "list", "-H", "-p", "-t", "filesystem,snapshot", "-o",
             ",".join(LIST_COLUMNS), "-r", ROOT), end="")  # fmt: skip
    print("=== zfs get ===")
    get = ["zfs", "get", "-H", "-p", "-o", "name,property,value,source", "-s", "local,received"]
    print(sh(*get, "-t", "filesystem", "-r", "all", f"{ROOT}/pve-1"), end="")
    print("=== end ===")


def test_create_from_bootfs_is_deep_and_copies_properties(pool: str) -> None:
    ok("create", "-d", "first copy", "-o", "com.example:x=1", "pve-2")
    assert prop(f"{ROOT}/pve-2", "origin").startswith(f"{ROOT}/pve-1@beadm-")
    assert prop(f"{ROOT}/pve-2/var", "origin").startswith(f"{ROOT}/pve-1/var@beadm-")
    assert prop(f"{ROOT}/pve-2", "canmount") == "noauto"
    # shown with the altroot in front, stored as "/" like pve-1's
    assert prop(f"{ROOT}/pve-2", "mountpoint") == prop(f"{ROOT}/pve-1", "mountpoint") == ALT
    assert prop(f"{ROOT}/pve-2", "com.example:site") == "lab"
    assert prop(f"{ROOT}/pve-2", "com.example:x") == "1"
    assert prop(f"{ROOT}/pve-2", "org.beadm:description") == "first copy"
    assert prop(f"{ROOT}/pve-2", "org.beadm:state") == "-"
    assert prop(f"{ROOT}/pve-2/var", "compression") == "zstd"
    assert prop(f"{ROOT}/pve-2/var", "org.beadm:state") == "-"
    assert all(prop(n, "org.beadm:state") == "-" for n in names() if "@beadm-" in n)
    data = json.loads(ok("list", "--json"))
    by = {b["name"]: b for b in data["bes"]}
    assert by["pve-1"]["active"] == "R"
    assert by["pve-2"]["description"] == "first copy"
    assert [d["name"] for d in by["pve-2"]["datasets"]] == [f"{ROOT}/pve-2", f"{ROOT}/pve-2/var"]


def test_create_from_other_be_and_from_snapshot(pool: str) -> None:
    ok("create", "pve-2")
    ok("create", "-e", "pve-2", "pve-3")
    assert prop(f"{ROOT}/pve-3", "origin").startswith(f"{ROOT}/pve-2@beadm-")
    ok("create", "pve-1@before")
    assert f"{ROOT}/pve-1/var@before" in names()
    ok("create", "-e", "pve-1@before", "fromsnap")
    assert prop(f"{ROOT}/fromsnap", "origin") == f"{ROOT}/pve-1@before"
    assert prop(f"{ROOT}/fromsnap/var", "origin") == f"{ROOT}/pve-1/var@before"
    # a user snapshot is never removed with the BE (no -o)
    ok("destroy", "-F", "fromsnap")
    assert f"{ROOT}/pve-1@before" in names()
    assert f"{ROOT}/fromsnap" not in names()


def test_destroy_origin_of_two_bes_promotes_them(pool: str) -> None:
    ok("create", "a")
    ok("create", "b")
    ok("activate", "a")
    ok("destroy", "-F", "pve-1")
    left = names()
    assert not any(n.startswith(f"{ROOT}/pve-1") for n in left)
    assert {f"{ROOT}/a", f"{ROOT}/a/var", f"{ROOT}/b", f"{ROOT}/b/var"} <= left
    assert sorted(bes()) == ["a", "b"]
    for be in ("a", "b"):
        where = ok("mount", be).strip()
        try:
            assert Path(where, "etc/marker").read_text() == "pve-1 root\n"
            assert Path(where, "var/marker").read_text() == "pve-1 var\n"
        finally:
            ok("umount", be)
    # no beadm snapshot is left without a clone
    for n in left:
        if "@beadm-" in n:
            assert prop(n, "clones") not in ("", "-"), n


def test_destroy_snapshot_with_clones_is_refused(pool: str) -> None:
    ok("create", "pve-2")
    snap = prop(f"{ROOT}/pve-2", "origin").partition("@")[2]
    before = state()
    res = beadm("destroy", "-F", f"pve-1@{snap}")
    assert res.returncode == 5
    assert len(res.stderr.splitlines()) == 1 and "has clones" in res.stderr
    assert state() == before
    ok("create", "pve-1@lonely")
    ok("destroy", "-F", "pve-1@lonely")
    assert f"{ROOT}/pve-1@lonely" not in names()
    assert f"{ROOT}/pve-1/var@lonely" not in names()


def test_rename_then_list(pool: str) -> None:
    ok("create", "-d", "keep me", "pve-2")
    ok("rename", "pve-2", "stable")
    assert "stable" in bes() and "pve-2" not in bes()
    assert f"{ROOT}/stable/var" in names()
    row = next(r for r in ok("list", "-H").splitlines() if r.startswith("stable\t"))
    assert row.endswith("keep me")
    # renaming the bootfs BE moves bootfs with it
    ok("rename", "pve-1", "first")
    assert sh("zpool", "get", "-H", "-o", "value", "bootfs", POOL).strip() == f"{ROOT}/first"


def test_list_exact_numbers_columns_and_flags_after_the_command(pool: str) -> None:
    """Issue 25 items 5 and 6 on real ZFS: list -p -o shows what zfs list -p shows; the
    global options after the command; --json's output_version."""
    used, creation = sh("zfs", "get", "-H", "-p", "-o", "value", "used,creation",
                        f"{ROOT}/pve-1").split()
    assert ok("list", "-H", "-p", "-o", "created,be,SPACE", "pve-1").splitlines() == [
        f"{creation}\tpve-1\t{used}"]
    before = names()
    # after the command: -n runs dry, --root/--backend as before it
    res = beadm_process("create", "-n", "--root", ROOT, "pve-9")
    assert res.returncode == 0, res.stderr
    assert "would run: zfs snapshot" in res.stdout
    assert names() == before
    res = beadm_process("list", "-o", "nosuch")
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1
    data = json.loads(ok("list", "--json"))
    assert data["output_version"] == {"command": "beadm list", "vers_major": 1,
                                      "vers_minor": 0}


def test_mount_umount_with_children(pool: str, tmp_path: Path) -> None:
    ok("create", "pve-2")
    where = ok("mount", "pve-2").strip()
    assert where.startswith("/tmp/beadm-")
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f" {where} " in mounts and f" {where}/var " in mounts
    assert Path(where, "var/marker").read_text() == "pve-1 var\n"
    res = beadm("mount", "pve-2")
    assert res.returncode == 5 and len(res.stderr.splitlines()) == 1
    ok("umount", "pve-2")
    assert f" {where} " not in Path("/proc/self/mountinfo").read_text()
    assert not Path(where).exists()
    # explicit directory, unmounted by directory
    d = tmp_path / "m"
    d.mkdir()
    assert ok("mount", "pve-2", str(d)).strip() == str(d)
    assert (d / "etc/marker").read_text() == "pve-1 root\n"
    ok("unmount", "-f", str(d))
    assert not (d / "etc").exists()
    res = beadm("umount", "pve-2")
    assert res.returncode == 3


def test_names_dot_and_prefix(pool: str) -> None:
    ok("create", "a.b")
    ok("create", "test")
    ok("create", "test2")
    ok("create", "aXb")
    before = {n for n in names() if "test2" in n or "aXb" in n}
    ok("destroy", "-F", "test")
    after = names()
    assert before <= after
    assert not any(n == f"{ROOT}/test" or n.startswith(f"{ROOT}/test/") for n in after)
    ok("destroy", "-F", "a.b")
    assert f"{ROOT}/aXb" in names()
    assert sorted(bes()) == ["aXb", "pve-1", "test2"]


def test_dry_run_changes_nothing(pool: str) -> None:
    ok("create", "pve-2")
    ok("create", "pve-1@snap")
    before = state()
    tmp_before = set(Path("/tmp").glob("beadm-*"))
    for args in (
        ["create", "x"],
        ["create", "-e", "pve-1@snap", "y"],
        ["create", "pve-2@s"],
        ["destroy", "-F", "pve-2"],
        ["destroy", "pve-1@snap"],
        ["rename", "pve-2", "z"],
        ["activate", "pve-2"],
        ["activate", "-t", "pve-2"],
        ["mount", "pve-2"],
        ["init", "pve-2"],
    ):
        out = ok("-n", *args)
        if args[0] != "init" and args != ["activate", "-t", "pve-2"]:
            assert "would run: " in out, args
    assert state() == before
    assert set(Path("/tmp").glob("beadm-*")) == tmp_before


REJECTED = [
    (["create", "bad/name"], 2),
    (["create", "with space"], 2),
    (["create", "trailing:"], 2),
    (["create", "--", "-lead"], 2),
    (["create", "pve-1"], 4),
    (["create", "-e", "nope", "x"], 3),
    (["create", "-e", "pve-1@nope", "x"], 3),
    (["create", "-o", "novalue", "x"], 2),
    (["destroy", "-F", "nope"], 3),
    (["destroy", "-F", "pve-1"], 5),  # bootfs
    (["destroy", "pve-2"], 5),  # no terminal, no -F
    (["rename", "pve-2", "pve-1"], 4),
    (["rename", "nope", "x"], 3),
    (["mount", "nope"], 3),
    (["umount", "pve-2"], 3),
    (["activate", "nope"], 3),
    (["activate", "a@b"], 2),
    (["list", "nope"], 3),
    (["frob"], 2),
    # issue 10: refused before anything changes
    (["create", "-o", "canmount=on", "x"], 2),
    (["create", "-o", "mountpoint=/x", "x"], 2),
    (["create", "-o", "org.beadm:state=", "x"], 2),
    (["create", "-d", "a\x0bb", "x"], 2),
    (["create", "-d", "a\x85b", "x"], 2),
    (["create", "-d", "a\u2028b", "x"], 2),
    (["create", "a:b"], 2),
    (["create", "PVE-2"], 4),
    (["create", "-e", "pve-1", "Pve-2"], 4),
    (["rename", "pve-2", "PVE-1"], 4),
    (["rename", "pve-2", "a:b"], 2),
    (["mount", "pve-2", "/"], 5),
    (["mount", "pve-2", "/usr"], 5),
    (["--root", POOL, "sync"], 2),
    (["--root", f"{ROOT}/pve-1", "sync"], 5),
    (["--root", f"{ROOT}/nope", "sync"], 3),
]


def test_rejected_input_one_line_nonzero_nothing_changed(pool: str) -> None:
    ok("create", "pve-2")
    before = state()
    bad = []
    for args, code in REJECTED:
        res = beadm(*args)
        one_line = len(res.stderr.splitlines()) == 1 and res.stderr.startswith("beadm: ")
        if res.returncode != code or not one_line or state() != before:
            bad.append((args, res.returncode, res.stderr))
    assert bad == []
    res = beadm_process("create", "bad/name")
    assert res.returncode == 2 and res.stderr.count("\n") == 1


def test_two_concurrent_creates(pool: str) -> None:
    """Serialised by the lock: both succeed (one waits), or, if the first takes longer
    than the wait, the second fails cleanly (exit 6, one line) and leaves nothing."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    argv = [sys.executable, "-m", "beadm", "--root", ROOT, "--backend", "none", "create"]
    procs = [
        subprocess.Popen(
            [*argv, name], env=env, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
        for name in ("c1", "c2")
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = [p.returncode for p in procs]
    print("concurrent creates:", codes, errs)
    assert 0 in codes and set(codes) <= {0, 6}, errs
    made = {f"c{i + 1}" for i, c in enumerate(codes) if c == 0}
    assert sorted(bes()) == sorted(made | {"pve-1"})
    for i, c in enumerate(codes):
        if c == 6:
            assert errs[i].count("\n") == 1 and "another beadm" in errs[i]
    assert len({prop(f"{ROOT}/{b}", "origin") for b in made}) == len(made)
    assert all(prop(n, "org.beadm:state") == "-" for n in names())


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from beadm.backend import NoopBackend
    from beadm.be import BeManager
    from beadm.runner import SubprocessRunner

    # "zfs clone:2": SIGKILL after the 2nd such command; "zfs inherit:1:0,2": at the 1st
    # such command, clear only the names at those argv positions (after the property),
    # as a zfs killed part-way through its list would, then SIGKILL
    what, _, rest = sys.argv[1].partition(":")
    n, _, part = rest.partition(":")

    class Killing(SubprocessRunner):
        seen = 0

        def run(self, argv, **kw):
            hit = " ".join(argv).startswith(what)
            Killing.seen += hit
            if hit and Killing.seen == int(n) and rest.count(":"):
                names = argv[3:]
                done = [names[int(i)] for i in part.split(",") if i]
                if done:
                    super().run([*argv[:3], *done], **kw)
                print("cleared", *done, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            res = super().run(argv, **kw)
            if hit and Killing.seen == int(n):
                os.kill(os.getpid(), signal.SIGKILL)
            return res

    runner = Killing()
    BeManager(runner, NoopBackend(runner), root="rpool/ROOT").create("half")
    """
)


def test_killed_create_leaves_no_half_be(pool: str) -> None:
    """A create killed at any point: the next changing command removes the half-made BE,
    or, once its root's mark is cleared, keeps it whole; no mark is left either way. The
    marks are cleared by one `zfs inherit`, which zfs works through one name at a time in
    its own order: every subset of them cleared is tried."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    # argv of that inherit: pve-1@S, pve-1/var@S, half, half/var
    parts = ["", "0", "0,1", "0,1,3", "3", "2", "2,3", "2,3,0"]
    points = ["zfs snapshot:1", "zfs clone:1", "zfs clone:2",
              *(f"zfs inherit:1:{p}" for p in parts), "zfs inherit:1"]
    for n, stop_after in enumerate(points):
        before = names()
        proc = subprocess.run(
            [sys.executable, "-c", KILLER, stop_after], env=env, capture_output=True, text=True
        )
        assert proc.returncode == -signal.SIGKILL, (stop_after, proc.stderr)
        cleared = proc.stdout.split()[1:] if proc.stdout.startswith("cleared") else []
        # whole once its root is unmarked: after the last command, or with it cleared
        whole = stop_after == "zfs inherit:1" or f"{ROOT}/half" in cleared
        # never a half one that looks whole: list shows it [creating] until it is gone
        rows = {r.split("\t")[0]: r for r in ok("list", "-H").splitlines()}
        assert ("half" in rows and "[creating]" not in rows["half"]) == whole, (
            stop_after, cleared, rows)
        assert "half" not in rows or whole or "[creating]" in rows["half"], rows
        ok("create", f"other{n}")  # the next changing command cleans up
        after = names()
        # one zfs process for every dataset and snapshot (one each took most of this test)
        states = dict(line.split("\t") for line in sh(
            "zfs", "get", "-H", "-p", "-t", "all", "-r", "-o", "name,value", "org.beadm:state",
            POOL).splitlines())
        assert states.keys() == after and set(states.values()) == {"-"}, (stop_after, states)
        if whole:
            half = f"{ROOT}/half"
            assert prop(f"{half}/var", "origin") == prop(half, "origin").replace(
                "@", "/var@"), stop_after
            ok("destroy", "-F", "half")  # with its origin snapshot: beadm made it
            after = names()
        assert not any(x.startswith(f"{ROOT}/half") for x in after), stop_after
        new = after - before
        other = f"{ROOT}/other{n}"
        assert {x for x in new if "@" not in x} == {other, f"{other}/var"}, stop_after
        origin = prop(other, "origin").partition("@")[2]
        expect = {f"{ROOT}/pve-1@{origin}", f"{ROOT}/pve-1/var@{origin}"}
        assert {x for x in new if "@" in x} == expect, stop_after


def test_running_be_rules_via_library(pool: str, tmp_path: Path) -> None:
    """With pve-1 as the running BE (mountinfo simulated): default source, refusals."""
    from beadm.backend import NoopBackend
    from beadm.be import BeManager
    from beadm.errors import RefusedError
    from beadm.lock import Lock
    from beadm.runner import SubprocessRunner

    mi = tmp_path / "mountinfo"
    mi.write_text(f"1 0 0:1 / / rw - zfs {ROOT}/pve-1 rw\n")
    runner = SubprocessRunner()
    mgr = BeManager(runner, NoopBackend(runner), mountinfo=mi, lock=Lock(tmp_path / "l"))
    assert mgr.root == ROOT
    mgr.create("pve-2")
    assert prop(f"{ROOT}/pve-2", "origin").startswith(f"{ROOT}/pve-1@beadm-")
    ok("activate", "pve-2")
    with pytest.raises(RefusedError, match="running"):
        mgr.destroy("pve-1")
    with pytest.raises(RefusedError, match="running"):
        mgr.rename("pve-1", "x")
    assert [i.active for i in mgr.listing().bes] == ["N", "R"]


def test_activate_sets_bootfs_and_canmount(pool: str) -> None:
    ok("create", "pve-2")
    sh("zfs", "set", "canmount=on", f"{ROOT}/pve-1")
    ok("activate", "pve-2")
    assert sh("zpool", "get", "-H", "-o", "value", "bootfs", POOL).strip() == f"{ROOT}/pve-2"
    assert prop(f"{ROOT}/pve-1", "canmount") == "noauto"
    rows = {r.split("\t")[0]: r.split("\t")[1] for r in ok("list", "-H").splitlines()}
    assert rows == {"pve-1": "-", "pve-2": "R"}
    ok("activate", "-t", "pve-1")
    assert sh("zpool", "get", "-H", "-o", "value", "bootfs", POOL).strip() == f"{ROOT}/pve-2"


def test_lock_makes_a_second_changer_wait_then_fail(pool: str) -> None:
    import fcntl

    with Path("/run/beadm.lock").open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        start = time.monotonic()
        res = beadm_process("create", "late")
        waited = time.monotonic() - start
    assert res.returncode == 6 and "another beadm" in res.stderr
    assert 4 < waited < 30
    assert "late" not in bes()


def test_every_command_help_has_an_example() -> None:
    for args in (["--help"], ["create", "--help"]):
        res = beadm_process(*args)
        assert res.returncode == 0 and "example:" in res.stdout
    from beadm.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        assert "example:" in (p.epilog or ""), name


def _library(backend: object) -> object:
    """A BeManager on the lab pool with ``backend`` (e.g. one that fails)."""
    from beadm.be import BeManager
    from beadm.lock import Lock
    from beadm.runner import SubprocessRunner

    return BeManager(SubprocessRunner(), backend, root=ROOT,  # type: ignore[arg-type]
                     lock=Lock(Path("/run/beadm.lock")))


def _failing(hook: str) -> object:
    from beadm.backend import NoopBackend
    from beadm.errors import BootError
    from beadm.runner import SubprocessRunner

    calls: list[str] = []

    class Failing(NoopBackend):
        def post_rename(self, old: object, new: object) -> tuple[str, ...]:
            calls.append("post_rename")  # the second call is the undo: it succeeds
            if hook == "post_rename" and len(calls) == 1:
                raise BootError("ESP 1111-AAAA: no space left on device")
            return ()  # no warnings (what every changing hook returns)

        def activate(self, be: object, *, temporary: bool) -> tuple[str, ...]:
            if hook == "activate":
                raise BootError("ESP 1111-AAAA: no space left on device")
            return ()

    return Failing(SubprocessRunner())


def bootfs() -> str:
    return sh("zpool", "get", "-H", "-o", "value", "bootfs", POOL).strip()


def test_rename_failure_leaves_datasets_and_bootfs(pool: str) -> None:
    from beadm.errors import BootError

    ok("create", "pve-2")
    ok("create", "pve-2@keep")
    ok("activate", "pve-2")
    before = state()
    mgr = _library(_failing("post_rename"))
    with pytest.raises(BootError):
        mgr.rename("pve-2", "stable")  # type: ignore[attr-defined]
    assert state() == before
    assert bootfs() == f"{ROOT}/pve-2"
    assert f"{ROOT}/stable" not in names() and f"{ROOT}/pve-2/var@keep" in names()


KILL_RENAME = textwrap.dedent(
    """
    import os, signal
    from beadm.backend import NoopBackend
    from beadm.be import BeManager
    from beadm.runner import SubprocessRunner

    class Killing(SubprocessRunner):
        def run(self, argv, **kw):
            res = super().run(argv, **kw)
            if list(argv[:2]) == ["zfs", "rename"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return res

    runner = Killing()
    BeManager(runner, NoopBackend(runner), root="rpool/ROOT").rename("pve-2", "stable")
    """
)


def test_killed_rename_is_finished_by_the_next_command(pool: str) -> None:
    ok("create", "pve-2")
    ok("activate", "pve-2")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-c", KILL_RENAME], env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # killed after `zfs rename`: the BE carries the mark (the boot entries on the ESPs
    # would still name pve-2). OpenZFS keeps bootfs on the renamed dataset by itself.
    assert f"{ROOT}/pve-2" not in names() and bootfs() == f"{ROOT}/stable"
    assert prop(f"{ROOT}/stable", "org.beadm:state") == "renaming:pve-2"
    assert sorted(bes()) == ["pve-1", "stable"]  # list works meanwhile
    ok("sync")  # what the kernel hook runs; any changing command finishes the rename
    assert bootfs() == f"{ROOT}/stable"
    assert prop(f"{ROOT}/stable", "org.beadm:state") == "-"
    assert sorted(bes()) == ["pve-1", "stable"]


def test_activate_failure_leaves_bootfs(pool: str) -> None:
    from beadm.errors import BootError

    ok("create", "pve-2")
    sh("zfs", "set", "canmount=on", f"{ROOT}/pve-1")
    before = state()
    mgr = _library(_failing("activate"))
    with pytest.raises(BootError):
        mgr.activate("pve-2")  # type: ignore[attr-defined]
    assert state() == before
    assert bootfs() == f"{ROOT}/pve-1"


def test_odd_descriptions_set_by_hand_do_not_break_list(pool: str) -> None:
    """Set with `zfs set` (or an older beadm): line-breaking characters, a newline, bytes
    that are not UTF-8. list works; create copies such a property byte for byte."""
    ok("create", "pve-2")
    odd = b"a\x0bb\x0cc\x1cd\x1de\x1ef\xc2\x85g\xe2\x80\xa8h\xe2\x80\xa9i\nj\xffk"
    for ds in (f"{ROOT}/pve-2", f"{ROOT}/pve-1"):
        subprocess.run([b"zfs", b"set", b"org.beadm:description=" + odd, ds.encode()],
                       check=True)
    subprocess.run([b"zfs", b"set", b"com.example:odd=" + odd, f"{ROOT}/pve-1".encode()],
                   check=True)
    rows = ok("list", "-H").splitlines()
    assert [r.split("\t")[0] for r in rows] == ["pve-1", "pve-2"]
    assert rows[1].endswith("\\xffk")
    ok("list")
    ok("list", "-a")
    assert len(json.loads(ok("list", "--json"))["bes"]) == 2
    ok("create", "pve-3")  # reads pve-1's local properties to copy them
    got = subprocess.run([b"zfs", b"get", b"-H", b"-o", b"value", b"com.example:odd",
                          f"{ROOT}/pve-3".encode()], capture_output=True, check=True).stdout
    assert got == odd + b"\n"
    res = beadm("create", "-d", "x\x85y", "pve-4")
    assert res.returncode == 2 and len(res.stderr.splitlines()) == 1
    assert "pve-4" not in bes()
