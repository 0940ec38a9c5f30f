"""The trial boot's dead man's switch (beadm.watchdog; issue 13 item 2, "hangs"): the unit
that arms it, the range check, and the magic close against a fake sysfs and device node."""

from __future__ import annotations

import fcntl
import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from beadm import watchdog as wd
from beadm.backend import BeRef
from beadm.be import BeManager
from beadm.cli import Deps, main
from beadm.errors import BootError, LockedError, UsageError
from beadm.esp import persist
from beadm.lock import Lock
from worlds import REPO
from worlds.fakes import RecordingBackend
from worlds.guard import World


def fake_watchdog(tmp_path: Path, name: str, identity: str, state: str) -> tuple[Path, Path]:
    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    (sysfs / name).mkdir(parents=True)
    dev.mkdir(exist_ok=True)
    (sysfs / name / "identity").write_text(identity + "\n")
    (sysfs / name / "state").write_text(state + "\n")
    (dev / name).write_bytes(b"")
    return sysfs, dev


def test_range() -> None:
    for ok in (0, wd.MIN, wd.DEFAULT, wd.MAX):
        wd.check(ok)
    for bad in (-1, 1, wd.MIN - 1, wd.MAX + 1):
        with pytest.raises(UsageError, match="--watchdog must be 0"):
            wd.check(bad)


def test_disarm_writes_the_magic_close_to_every_software_watchdog_only(
        tmp_path: Path) -> None:
    """sysfs says ``inactive`` for a softdog armed at boot and opened by no one (seen in the
    lab), so the state is not looked at: every software watchdog gets the magic close."""
    sysfs, dev = fake_watchdog(tmp_path, "watchdog0", "iTCO_wdt", "active")
    fake_watchdog(tmp_path, "watchdog1", wd.IDENTITY, "inactive")
    assert wd.disarm(sysfs, dev) == []
    assert (dev / "watchdog1").read_bytes() == b"V"
    assert (dev / "watchdog0").read_bytes() == b""  # a hardware watchdog: not ours


def test_disarm_says_when_nowayout_keeps_it_running(tmp_path: Path) -> None:
    sysfs, dev = fake_watchdog(tmp_path, "watchdog0", wd.IDENTITY, "inactive")
    (sysfs / "watchdog0" / "nowayout").write_text("1\n")
    (note,) = wd.disarm(sysfs, dev)
    assert "nowayout" in note and (dev / "watchdog0").read_bytes() == b"V"


def test_disarm_leaves_a_held_device_and_tolerates_no_sysfs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert wd.disarm(tmp_path / "none", tmp_path / "dev") == []
    sysfs, dev = fake_watchdog(tmp_path, "watchdog0", wd.IDENTITY, "active")

    def busy(path: object, flags: int) -> int:
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(wd.os, "open", busy)
    (note,) = wd.disarm(sysfs, dev)
    assert "held by another program" in note and "watchdog-mux" in note


def test_the_unit_arms_only_trial_boots_and_before_any_local_mount() -> None:
    lines = persist.WATCHDOG_UNIT_TEXT.splitlines()
    assert "ConditionKernelCommandLine=softdog.soft_active_on_boot=1" in lines
    assert "DefaultDependencies=no" in lines
    before = " ".join(ln for ln in lines if ln.startswith("Before="))
    assert "local-fs-pre.target" in before and "sysinit.target" in before
    assert "ExecStart=/sbin/modprobe softdog" in lines  # by name: a blacklist does not apply
    assert "WantedBy=sysinit.target" in lines
    assert (f"etc/systemd/system/sysinit.target.wants/{persist.WATCHDOG_UNIT_NAME}",
            persist.WATCHDOG_UNIT_NAME) in persist.LINKS


# -- the CLI and the BE layer ---------------------------------------------------------------

class TrialBackend(RecordingBackend):
    """A pending trial of ``be`` (the recording backend has none), until ``pending`` is
    false; ``held`` counts open holds of the backend's session (``beadm.be`` holds it while
    it has the lock: the private namespace, the ESPs mounted)."""

    def __init__(self, be: str, fail_on: str | None = None) -> None:
        super().__init__(fail_on=fail_on)
        self.trial_be = be
        self.pending = True

    def trial_state(self, bes: list[BeRef]) -> object:
        if not self.pending:
            return None
        return SimpleNamespace(be=self.trial_be, base=f"beadm-{self.trial_be}-6.8.conf")

    def end_trial(self, bes: list[BeRef]) -> tuple[str, ...]:
        return self._hook("end_trial")



def lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # (closing releases it)
    return True


@contextmanager
def lock_held(path: Path, seconds: float) -> Iterator[None]:
    """Another holder of the beadm lock (a hook's ``sync --if-used``) for ``seconds``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pytest.fail(f"{path} is held already (by beadm itself?)")
    t = threading.Timer(seconds, os.close, (fd,))
    t.start()
    try:
        yield
    finally:
        t.join()


def test_cli_passes_the_watchdog_and_refuses_bad_values(guard_world: World) -> None:
    w = guard_world
    rc, _out, err = w.cli("activate", "--trial", "--watchdog", "90", "old")
    assert rc == 0, err
    assert [(c[0], c[3], c[4]) for c in w.backend.calls] == [("activate_trial", 3, 90)]
    rc, _out, err = w.cli("activate", "--trial", "old")
    assert rc == 0, err
    assert w.backend.calls[-1][4] == wd.DEFAULT
    calls, changes = len(w.backend.calls), len(w.changes)
    for argv in (("--trial", "--watchdog", "5"), ("--watchdog", "90")):
        rc, _out, err = w.cli("activate", *argv, "old")
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert "--watchdog" in err
    assert len(w.backend.calls) == calls and len(w.changes) == changes


@pytest.mark.parametrize("trial_be,checks,kind,disarmed", [
    ("cur", [], "confirmed", True),          # the trial passed: stop the watchdog
    ("cur", ["pveproxy is failed"], "failed", False),  # reboot: a hang there is reset too
    ("old", [], "given-up", False),          # another BE runs: no watchdog was armed
])
def test_trial_boot_disarms_only_a_confirmed_trial(tmp_path: Path, trial_be: str,
                                                  checks: list[str], kind: str,
                                                  disarmed: bool) -> None:
    w = World(tmp_path)
    w.backend = TrialBackend(trial_be)
    runner = w.runner()
    mgr = BeManager(runner, w.backend, mountinfo=w.mountinfo,  # type: ignore[arg-type]
                    lock=Lock(tmp_path / "lock", 0.2), running_root=w.cur)
    said: list[str] = []

    def disarm() -> list[str]:
        said.append("disarm")
        return ["a note"]

    res = mgr.trial_boot(lambda: checks, reboot=False, disarm=disarm)
    assert res.kind == kind
    assert said == (["disarm"] if disarmed else [])
    if disarmed:
        assert res.why == ("a note",)


def run_generator(tmp_path: Path, cmdline: str) -> Path:
    """The generator with /proc/cmdline pointed at a file; returns its output dir."""
    import subprocess

    (tmp_path / "cmdline").write_text(cmdline + "\n")
    script = tmp_path / "gen"
    script.write_text(persist.GENERATOR_TEXT.replace("/proc/cmdline", str(tmp_path / "cmdline")))
    out = tmp_path / "normal"
    out.mkdir()
    subprocess.run(["sh", str(script), str(out), str(tmp_path / "early"),
                    str(tmp_path / "late")], check=True)
    return out


def test_generator_orders_watchdog_mux_after_the_trial_only_in_a_trial_boot(
        tmp_path: Path) -> None:
    armed = "root=ZFS=rpool/ROOT/pve-2 boot=zfs panic=10 softdog.soft_margin=600 " \
            "softdog.soft_active_on_boot=1"
    (tmp_path / "a").mkdir()
    out = run_generator(tmp_path / "a", armed)
    drop = out / "watchdog-mux.service.d" / "50-beadm-trial.conf"
    assert drop.read_text() == "[Unit]\nAfter=beadm-trial.service\n"
    (tmp_path / "b").mkdir()
    out = run_generator(tmp_path / "b", "root=ZFS=rpool/ROOT/pve-1 boot=zfs")
    assert list(out.iterdir()) == []  # no trial: nothing generated
    (tmp_path / "c").mkdir()
    out = run_generator(tmp_path / "c", "softdog.soft_active_on_boot=10 x")  # not our option
    assert list(out.iterdir()) == []


def test_generator_is_installed_by_init_and_the_package() -> None:
    repo = REPO
    hook = repo / "hooks" / persist.GENERATOR_NAME
    assert hook.read_text() == persist.GENERATOR_TEXT and os.access(hook, os.X_OK)
    install = (repo / "debian" / "beadm.install").read_text().splitlines()
    assert f"hooks/{persist.GENERATOR_NAME} usr/lib/systemd/system-generators/" in install
    assert (persist.GENERATOR, persist.GENERATOR_TEXT, 0o755) in persist.FILES


def test_time_left_from_the_margin_on_the_command_line_and_the_uptime(tmp_path: Path) -> None:
    (tmp_path / "uptime").write_text("123.50 200.00\n")
    cmd = tmp_path / "cmdline"
    cmd.write_text("root=ZFS=rpool/ROOT/pve-2 panic=10 softdog.soft_margin=600 "
                   "softdog.soft_active_on_boot=1\n")
    assert wd.time_left(tmp_path) == 600 - 123.5
    cmd.write_text("root=ZFS=x softdog.soft_active_on_boot=1\n")  # softdog's own margin
    assert wd.time_left(tmp_path) == 60 - 123.5
    cmd.write_text("root=ZFS=x softdog.soft_margin=600\n")  # not armed at boot: no trial's
    assert wd.time_left(tmp_path) is None
    assert wd.time_left(tmp_path / "none") is None


def manager(tmp_path: Path, backend: TrialBackend, wait: float = 0.2) -> tuple[World, BeManager]:
    w = World(tmp_path)
    w.backend = backend
    mgr = BeManager(w.runner(), backend, mountinfo=w.mountinfo,  # type: ignore[arg-type]
                    lock=Lock(tmp_path / "lock", wait), running_root=w.cur)
    return w, mgr


def test_trial_boot_runs_the_checks_unlocked_and_outside_beadms_session(
        tmp_path: Path) -> None:
    """Issue 23.9: the checks look at the host as its services see it: not in beadm's
    private mount namespace with the ESPs mounted (the backend's held session), and they
    do not keep other beadm commands (a kernel hook) waiting."""
    backend = TrialBackend("cur")
    _w, mgr = manager(tmp_path, backend)
    seen: list[tuple[bool, int]] = []

    def checks() -> list[str]:
        seen.append((lock_is_free(tmp_path / "lock"), backend.held))
        return []

    res = mgr.trial_boot(checks, reboot=False, disarm=list)
    assert res.kind == "confirmed"
    assert seen == [(True, 0)]
    assert [c[0] for c in backend.calls] == ["activate"]


def test_trial_boot_disarms_when_the_confirmation_fails(tmp_path: Path) -> None:
    """Issue 23.6: once the checks passed, an error confirming the trial still stops its
    watchdog (else the host and its guests are reset at the margin)."""
    backend = TrialBackend("cur", fail_on="activate")
    _w, mgr = manager(tmp_path, backend)
    said: list[str] = []

    def disarm() -> list[str]:
        said.append("disarm")
        return []

    with pytest.raises(BootError, match="activate failed"):
        mgr.trial_boot(lambda: [], reboot=False, disarm=disarm)
    assert said == ["disarm"]


def test_trial_boot_disarms_when_the_lock_stays_held_after_the_checks(tmp_path: Path) -> None:
    """The lock taken by another command while the checks ran and not released in time:
    the trial stays pending (nothing ended, nothing activated), the watchdog is stopped."""
    backend = TrialBackend("cur")
    _w, mgr = manager(tmp_path, backend, wait=0.3)
    said: list[str] = []
    holding: list[object] = []

    def checks() -> list[str]:
        holding.append(lock_held(tmp_path / "lock", 1.0))
        holding[0].__enter__()  # type: ignore[attr-defined]
        return []

    def disarm() -> list[str]:
        said.append("disarm")
        return []

    try:
        with pytest.raises(LockedError):
            mgr.trial_boot(checks, reboot=False, disarm=disarm)
    finally:
        holding[0].__exit__(None, None, None)  # type: ignore[attr-defined]
    assert said == ["disarm"]
    assert backend.calls == []


@pytest.mark.parametrize("problems", [[], ["pveproxy.service is failed"]])
def test_trial_boot_settled_meanwhile_changes_nothing_and_disarms(
        tmp_path: Path, problems: list[str]) -> None:
    """Another command ended the trial while the checks ran (the lock was free then): it is
    verified again under the lock, and neither confirmed nor given up a second time (no
    reboot either); passed checks still stop the watchdog."""
    backend = TrialBackend("cur")
    w, mgr = manager(tmp_path, backend)
    said: list[str] = []

    def checks() -> list[str]:
        backend.pending = False
        return problems

    def disarm() -> list[str]:
        said.append("disarm")
        return []

    res = mgr.trial_boot(checks, reboot=True, disarm=disarm)
    assert res.kind == "settled"
    assert backend.calls == []
    assert said == ([] if problems else ["disarm"])
    assert not [c for c in w.changes if c[0] == "systemctl"]


@pytest.mark.parametrize("booted_trial", [True, False])
def test_trial_boot_stops_the_watchdog_of_a_trial_ended_before_it_ran(
        tmp_path: Path, booted_trial: bool) -> None:
    """This boot came from a trial's counted entry (armed), but the trial is no longer
    pending (the admin confirmed it with activate before beadm-trial.service ran): nothing
    would ever stop the watchdog, and the healthy host would be reset at the margin."""
    backend = TrialBackend("cur")
    backend.pending = False
    backend.booted_trial = lambda: booted_trial  # type: ignore[attr-defined]
    _w, mgr = manager(tmp_path, backend)
    said: list[str] = []

    def disarm() -> list[str]:
        said.append("disarm")
        return ["a note"]

    res = mgr.trial_boot(lambda: pytest.fail("no checks: no trial"), reboot=False,
                         disarm=disarm)
    if booted_trial:
        assert (res.kind, res.be, res.why, said) == ("ended", "cur", ("a note",), ["disarm"])
    else:
        assert (res.kind, said) == ("none", [])
    assert backend.calls == []


def test_trial_boot_checks_that_cannot_run_fail_the_trial(tmp_path: Path) -> None:
    backend = TrialBackend("cur")
    _w, mgr = manager(tmp_path, backend)

    def checks() -> list[str]:
        raise PermissionError(13, "Permission denied", "/etc/beadm/checks.d/10-x")

    res = mgr.trial_boot(checks, reboot=False, disarm=list)
    assert res.kind == "failed" and "could not run" in res.why[0]
    assert [c[0] for c in backend.calls] == ["end_trial"]


# -- beadm trial-boot (the unit's command): waits for the lock as the hooks do ----------------

def trial_cli(tmp_path: Path, backend: TrialBackend, *, uptime: float,
              hook_wait: float = 30.0) -> tuple[Deps, list[str], World]:
    w = World(tmp_path)
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "cmdline").write_text("root=ZFS=rpool/ROOT/cur softdog.soft_margin=600 "
                                  "softdog.soft_active_on_boot=1\n")
    (proc / "uptime").write_text(f"{uptime} 1.0\n")
    said: list[str] = []

    def disarm() -> list[str]:
        said.append("disarm")
        return []

    deps = Deps(make_runner=lambda dry, o: w.runner(dry),
                make_backend=lambda name, runner: backend,  # type: ignore[arg-type,return-value]
                mountinfo=w.mountinfo, running_root=w.cur, lock_path=tmp_path / "lock",
                lock_wait=0.2, hook_lock_wait=hook_wait, proc=proc, euid=lambda: 0,
                stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO(),
                disarm=disarm)
    return deps, said, w


def test_trial_boot_waits_for_the_lock_as_the_hooks_do_then_confirms(tmp_path: Path) -> None:
    """Issue 23.6: an apt or kernel hook holding the lock at boot (``sync --if-used``): the
    trial boot waits for it (not 5 s), then confirms the trial and stops its watchdog."""
    backend = TrialBackend("cur")
    deps, said, _w = trial_cli(tmp_path, backend, uptime=100.0)
    with lock_held(tmp_path / "lock", 1.5):
        rc = main(["trial-boot"], deps=deps)
    err = deps.stderr.getvalue()  # type: ignore[union-attr]
    assert rc == 0, err
    assert "cur is the default now" in deps.stdout.getvalue()  # type: ignore[union-attr]
    # the wait: the hooks' 30 s here, as the watchdog leaves 600 - 100 - 60 s
    assert err == ("beadm: waiting up to 30s for another beadm command to finish (the trial "
                   "boot is settled after it)\n")
    assert [c[0] for c in backend.calls] == ["activate"]
    assert said == ["disarm"]


def test_trial_boot_waits_no_longer_than_the_watchdog_allows(tmp_path: Path) -> None:
    """The watchdog resets the machine 600 s after the boot started: 539 s into it, the
    trial boot waits at most 1 s (keeping 60 s to confirm), then fails with one line;
    the checks had not run, so the watchdog stays armed (a boot that hangs is reset)."""
    backend = TrialBackend("cur")
    deps, said, _w = trial_cli(tmp_path, backend, uptime=539.0)
    start = time.monotonic()
    with lock_held(tmp_path / "lock", 3.0):
        rc = main(["trial-boot"], deps=deps)
        took = time.monotonic() - start
    err = deps.stderr.getvalue().splitlines()  # type: ignore[union-attr]
    assert rc == 6 and 0.9 < took < 2.5, (rc, took, err)
    assert err[-1].startswith("beadm: another beadm command is running") and \
        "run 'beadm trial-boot' once the other command has finished" in err[-1]
    assert backend.calls == [] and said == []


def test_trial_boot_stopped_by_systemd_after_its_checks_disarms(tmp_path: Path) -> None:
    """systemd's SIGTERM (the unit's TimeoutStartSec) once the checks passed: the watchdog
    is stopped on the way out, the error is one line."""

    class Stopped(TrialBackend):
        def activate(self, be: object, *, temporary: bool) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # (the handler raises before this ends)

    backend = Stopped("cur")
    deps, said, _w = trial_cli(tmp_path, backend, uptime=100.0)
    before = signal.getsignal(signal.SIGTERM)
    rc = main(["trial-boot"], deps=deps)
    assert signal.getsignal(signal.SIGTERM) == before
    err = deps.stderr.getvalue().splitlines()  # type: ignore[union-attr]
    assert rc == 130 and err == ["beadm: stopped (SIGTERM)"], err
    assert said == ["disarm"]
