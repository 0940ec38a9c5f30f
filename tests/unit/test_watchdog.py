"""The trial boot's dead man's switch (beadm.watchdog; issue 13 item 2, "hangs"): the unit
that arms it, the range check, and the magic close against a fake sysfs and device node."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import RecordingBackend
from test_rollback_guard import World

from beadm import watchdog as wd
from beadm.backend import BeRef
from beadm.be import BeManager
from beadm.errors import UsageError
from beadm.lock import Lock
from beadm.sdboot import persist


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
    """A pending trial of ``be`` (the recording backend has none)."""

    def __init__(self, be: str) -> None:
        super().__init__()
        self.trial_be = be

    def trial_state(self, bes: list[BeRef]) -> object:
        return SimpleNamespace(be=self.trial_be)

    def end_trial(self, bes: list[BeRef]) -> None:
        self._hook("end_trial")


def test_cli_passes_the_watchdog_and_refuses_bad_values(tmp_path: Path) -> None:
    w = World(tmp_path)
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
    repo = Path(__file__).resolve().parents[2]
    hook = repo / "hooks" / persist.GENERATOR_NAME
    assert hook.read_text() == persist.GENERATOR_TEXT and os.access(hook, os.X_OK)
    install = (repo / "debian" / "beadm.install").read_text().splitlines()
    assert f"hooks/{persist.GENERATOR_NAME} usr/lib/systemd/system-generators/" in install
    assert (persist.GENERATOR, persist.GENERATOR_TEXT, 0o755) in persist.FILES
