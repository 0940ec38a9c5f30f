"""The one lock (beadm.lock): its timeout, its messages, and the hook's sync that outwaits a
long command but never the beadm command it runs under."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from beadm.cli import Deps, main
from beadm.errors import LockedError
from beadm.lock import Lock
from beadm.runner import UNDER_BEADM
from worlds.fakes import FakeRunner, RecordingBackend, pool_props
from worlds.pool import GET_TEXT, LIST_ARGV, LIST_FS_ARGV, LIST_TEXT, MOUNTINFO, without_snapshots


def test_lock_times_out(tmp_path: Path) -> None:
    with Lock(tmp_path / "l", 0.1):
        start = time.monotonic()
        with pytest.raises(LockedError) as exc, Lock(tmp_path / "l", 0.3):
            pass
        assert time.monotonic() - start >= 0.3
        assert "another beadm" in str(exc.value)
    with Lock(tmp_path / "l", 0.1):
        pass


def _release_later(lock: Lock, seconds: float) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(seconds), lock.release()))
    t.start()
    return t


def test_lock_long_wait_says_once_that_it_waits(tmp_path: Path) -> None:
    """Issue 10.8: the hooks' wait outlasts a long holder and says so, once."""
    holder = Lock(tmp_path / "l", 0.1)
    holder.acquire()
    told: list[float] = []
    t = _release_later(holder, 2.5)
    start = time.monotonic()
    with Lock(tmp_path / "l", 60, on_wait=told.append):
        assert time.monotonic() - start >= 2.4
    t.join()
    assert told == [60]
    with Lock(tmp_path / "l", 0.1, on_wait=told.append):  # free: no note
        pass
    assert told == [60]


def test_lock_timeout_message_says_what_to_do(tmp_path: Path) -> None:
    msg = r"held for more than 0\.2s\); run beadm sync"
    with (Lock(tmp_path / "l", 0.1), pytest.raises(LockedError, match=msg),
          Lock(tmp_path / "l", 0.2, then="run beadm sync")):
        pass


def _cli(tmp_path: Path, *argv: str, hook_wait: float,
         environ: dict[str, str] | None = None) -> tuple[int, str, RecordingBackend]:
    backend = RecordingBackend()

    def make_runner(dry: bool, out: object = None) -> FakeRunner:
        r = FakeRunner(dry_run=dry)
        r.on(*LIST_ARGV, stdout=LIST_TEXT)
        r.on(*LIST_FS_ARGV, stdout=without_snapshots(LIST_TEXT))
        r.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-1"))
        r.on("zfs", "get", "-H", "-p", "-o", "name,property,value,source", stdout=GET_TEXT)
        return r

    mi = tmp_path / "mountinfo"
    mi.write_text(MOUNTINFO)
    err = io.StringIO()
    deps = Deps(make_runner=make_runner,
                make_backend=lambda name, runner: backend,  # type: ignore[arg-type,return-value]
                mountinfo=mi, lock_path=tmp_path / "lock", lock_wait=0.2,
                hook_lock_wait=hook_wait, euid=lambda: 0, stdin=io.StringIO(),
                stdout=io.StringIO(), stderr=err, environ=environ or {})
    return main(list(argv), deps=deps), err.getvalue(), backend


def test_hook_sync_waits_for_a_long_create(tmp_path: Path) -> None:
    """``sync --if-used`` (zzz-beadm) outwaits another beadm that holds the lock longer than
    a command's usual wait (a create copying kernels), and then syncs."""
    holder = Lock(tmp_path / "lock", 0.1)
    holder.acquire()
    t = _release_later(holder, 1.5)
    rc, err, backend = _cli(tmp_path, "sync", "--if-used", hook_wait=60)
    t.join()
    assert rc == 0, err
    assert [c[0] for c in backend.calls] == ["sync"]
    assert err.count("waiting up to 1 min for another beadm command") == 1
    # the admin's own sync keeps the short wait
    holder.acquire()
    t = _release_later(holder, 1.5)
    rc, err, backend = _cli(tmp_path, "sync", hook_wait=60)
    t.join()
    assert rc == 6 and backend.calls == []


def test_hook_sync_under_a_beadm_command_does_not_wait_for_its_lock(tmp_path: Path) -> None:
    """A hook that a beadm command's own child runs (``proxmox-boot-tool refresh`` from
    ``destroy``) must not wait for the lock that beadm holds: it returns at once; that
    beadm re-asserts the defaults itself. Without the mark it waits (and here gives up)."""
    with Lock(tmp_path / "lock", 0.1):
        rc, err, backend = _cli(tmp_path, "sync", "--if-used", hook_wait=0.3,
                                environ={UNDER_BEADM: "4242"})
        assert (rc, backend.calls) == (0, []), err
        assert "waiting" not in err
        rc, err, backend = _cli(tmp_path, "sync", "--if-used", hook_wait=0.3)
        assert rc == 6 and backend.calls == []


def test_hook_sync_that_cannot_run_says_what_is_missing(tmp_path: Path) -> None:
    with Lock(tmp_path / "lock", 0.1):
        rc, err, backend = _cli(tmp_path, "sync", "--if-used", hook_wait=0.5)
    assert rc == 6 and backend.calls == []
    assert "boot entries for kernels or initrds installed meanwhile are missing" in err
    assert "run 'beadm sync'" in err
