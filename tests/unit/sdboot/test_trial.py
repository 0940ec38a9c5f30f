"""activate --trial on the systemd-boot backend (sdboot_world), the loader's count-down
simulated as systemd-boot 252 does it: rename on the ESP that booted only."""

from __future__ import annotations

from pathlib import Path

import pytest

from beadm import health
from beadm.errors import BootError
from beadm.esp import persist
from beadm.esp.efivars import EfiRefused, EfiVars
from beadm.runner import SubprocessRunner
from beadm.sdboot import trial
from worlds.sdboot import K2, UUIDS, World

P1 = f"beadm-pve-1-{K2}.conf"
P2 = f"beadm-pve-2-{K2}.conf"


@pytest.fixture
def w(sdboot_world: World) -> World:
    w = sdboot_world
    w.backend.init(w.ref("pve-1"))
    w.add_be("pve-2", clone_of="pve-1")
    w.backend.post_create(w.ref("pve-2"))
    return w


def counted(w: World, uuid: str) -> list[str]:
    return [e for e in w.entries(uuid) if "+" in e]


def boot_try(w: World, uuid: str) -> None:
    """What systemd-boot does when it boots a counted entry from ESP ``uuid``."""
    d = w.esps[uuid] / "loader/entries"
    (name,) = [p.name for p in d.iterdir() if "+" in p.name]
    base, _, rest = name[:-5].rpartition("+")
    left, _, done = rest.partition("-")
    (d / name).rename(d / f"{base}+{int(left) - 1}-{int(done or 0) + 1}.conf")


def test_pattern_names() -> None:
    assert trial.counted_fname(P2, 3) == f"beadm-pve-2-{K2}+3.conf"
    pat = trial.pattern_for(P2)
    assert pat == f"beadm-pve-2-{K2}+[123456789]*"
    assert trial.base_of_pattern(pat) == P2
    assert trial.base_of_pattern(P2) is None and trial.base_of_pattern(None) is None
    arm = "softdog.soft_margin=600 softdog.soft_active_on_boot=1"
    assert trial.trial_options("root=ZFS=x boot=zfs") == f"root=ZFS=x boot=zfs panic=10 {arm}"
    assert trial.trial_options("root=ZFS=x panic=5") == f"root=ZFS=x panic=5 {arm}"
    assert trial.trial_options("root=ZFS=x", 0) == "root=ZFS=x panic=10"
    assert trial.trial_options("root=ZFS=x", 90).endswith(
        "softdog.soft_margin=90 softdog.soft_active_on_boot=1")
    # the admin's own softdog options win (e.g. a HA node's settings)
    own = "root=ZFS=x panic=5 softdog.soft_margin=60"
    assert trial.trial_options(own) == own


def test_trial_boots_until_spent_then_the_running_be(w: World) -> None:
    w.backend.activate_trial(w.ref("pve-2"), w.ref("pve-1"), 2)
    assert w.efi("LoaderEntryDefault") == trial.pattern_for(P2)
    for u in UUIDS:
        assert counted(w, u) == [trial.counted_fname(P2, 2)]
        assert (w.esps[u] / "loader/loader.conf").read_text().endswith(f"default {P1}\n")
        assert w.booted(u) == "pve-2"
    assert w.runner.props[("rpool/ROOT", "org.beadm:next")] == "pve-1"
    text = (w.esps[UUIDS[0]] / "loader/entries" / trial.counted_fname(P2, 2)).read_text()
    assert "panic=10" in text and "softdog.soft_margin=600 softdog.soft_active_on_boot=1" in text
    plain = (w.esps[UUIDS[0]] / "loader/entries" / P2).read_text()
    assert "softdog" not in plain and "panic=" not in plain  # only the counted entry arms it
    state = w.backend.boot_state(w.refs())
    assert (state.next_boot, state.once, state.trial, state.trial_tries) == \
        ("pve-1", "pve-2", "pve-2", 2)
    boot_try(w, UUIDS[0])
    assert w.booted(UUIDS[0]) == "pve-2"
    boot_try(w, UUIDS[0])  # +0-2: spent
    assert w.booted(UUIDS[0]) == "pve-1"
    assert w.booted(UUIDS[1]) == "pve-2"  # the other ESP was not booted: full count


def test_sync_and_check_keep_the_pending_trial_as_the_loader_left_it(w: World) -> None:
    w.backend.activate_trial(w.ref("pve-2"), w.ref("pve-1"), 3)
    boot_try(w, UUIDS[0])
    before = {u: counted(w, u) for u in UUIDS}
    assert before[UUIDS[0]] == [f"beadm-pve-2-{K2}+2-1.conf"]
    for u in UUIDS:
        w.pbt_refresh(w.esps[u])  # Proxmox rewrites loader.conf
    w.backend.sync(w.refs())
    assert {u: counted(w, u) for u in UUIDS} == before
    assert w.efi("LoaderEntryDefault") == trial.pattern_for(P2)
    for u in UUIDS:
        assert (w.esps[u] / "loader/loader.conf").read_text().endswith(f"default {P1}\n")
    checked = w.backend.check(w.refs())
    assert checked.problems == ()
    assert any("trial boot of pve-2 is pending" in str(n) for n in checked.notes)


def test_end_trial_restores_the_default_everywhere(w: World) -> None:
    w.backend.activate_trial(w.ref("pve-2"), w.ref("pve-1"), 3)
    boot_try(w, UUIDS[0])
    t = w.backend.trial_state(w.refs())
    assert t is not None and t.be == "pve-2" and t.tries_left == {UUIDS[0]: 2, UUIDS[1]: 3}
    w.backend.end_trial(w.refs())
    assert w.efi("LoaderEntryDefault") == P1
    assert all(counted(w, u) == [] and w.booted(u) == "pve-1" for u in UUIDS)
    assert w.backend.trial_state(w.refs()) is None
    assert w.backend.check(w.refs()).problems == ()


def test_activate_ends_a_trial_and_leftovers_are_reported_then_pruned(w: World) -> None:
    w.backend.activate_trial(w.ref("pve-2"), w.ref("pve-1"), 3)
    w.backend.activate(w.ref("pve-2"), temporary=False)  # what a confirmed trial does
    assert w.efi("LoaderEntryDefault") == P2
    assert all(counted(w, u) == [] and w.booted(u) == "pve-2" for u in UUIDS)
    # a leftover counted entry (a kill between the two steps) is reported, then pruned
    left = w.esps[UUIDS[1]] / "loader/entries" / trial.counted_fname(P2, 3)
    left.write_text((w.esps[UUIDS[1]] / "loader/entries" / P2).read_text())
    assert any("left from a trial" in p for p in w.backend.check(w.refs()).problems)
    w.backend.sync(w.refs())
    assert not left.exists()


TRIAL_PATHS = [*(f[0] for f in persist.TRIAL_FILES), *(link[0] for link in persist.TRIAL_LINKS)]


def test_activate_trial_puts_the_trial_units_into_a_be_without_them(w: World) -> None:
    """Issue 23.7: a BE made by the old shell beadm, with --backend none or received from
    elsewhere has no beadm-trial.service (no checks would ever run: the loader would fall
    back silently after the tries) nor the watchdog's unit and generator: activate --trial
    installs them, enabled, before the trial is committed."""
    root = w.bes["rpool/ROOT/pve-2"]
    for rel in TRIAL_PATHS:
        (root / rel).unlink()
    w.backend.activate_trial(w.ref("pve-2"), w.ref("pve-1"), 3)
    assert w.efi("LoaderEntryDefault") == trial.pattern_for(P2)
    for rel, text, mode in persist.TRIAL_FILES:
        assert (root / rel).read_text() == text and (root / rel).stat().st_mode & 0o777 == mode
    for rel, name in persist.TRIAL_LINKS:
        assert (root / rel).is_symlink() and str((root / rel).readlink()) == f"../{name}"
        assert (root / rel).resolve() == (root / "etc/systemd/system" / name).resolve()
    # only what a trial needs: the apt hook and the shutdown unit are not the trial's
    assert persist.APT_CONF not in TRIAL_PATHS and persist.UNIT not in TRIAL_PATHS


def test_activate_trial_dry_run_says_it_would_install_the_trial_units(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.backend.init(w.ref("pve-1"))
    w.add_be("pve-2", clone_of="pve-1")
    w.backend.post_create(w.ref("pve-2"))
    root = w.bes["rpool/ROOT/pve-2"]
    (root / persist.TRIAL_UNIT).unlink()
    dry = World(tmp_path / "dry", dry_run=True)
    dry.bes.update(w.bes)
    dry.esps.update(w.esps)
    dry.host.esp_dirs.update(w.esps)
    dry.backend.activate_trial(dry.ref("pve-2"), dry.ref("pve-1"), 3)
    assert f"would install {root / persist.TRIAL_UNIT}" in dry.out.getvalue()
    assert not (root / persist.TRIAL_UNIT).exists()


def test_booted_trial_is_a_boot_from_a_counted_beadm_entry(w: World) -> None:
    assert not w.backend.booted_trial()  # (no LoaderEntrySelected)
    for selected, want in ((trial.counted_fname(P2, 3), True), (f"beadm-pve-2-{K2}+2-1.conf",
                           True), (P2, False), (f"proxmox-{K2}+3.conf", False)):
        w.host.efivars.set("LoaderEntrySelected", selected)
        assert w.backend.booted_trial() is want, selected


class Refusing(EfiVars):
    def set(self, name: str, value: str) -> None:
        raise EfiRefused(5, "Input/output error")


def test_refused_efi_write_fails_and_leaves_the_running_be_default(w: World) -> None:
    w.host.efivars = Refusing(w.efivars)
    with pytest.raises(BootError, match="could not be written"):
        w.backend.activate_trial(w.ref("pve-2"), w.ref("pve-1"), 3)
    assert all(counted(w, u) == [] and w.booted(u) == "pve-1" for u in UUIDS)


def test_health_scripts_and_units(tmp_path: Path) -> None:
    d = tmp_path / "checks.d"
    d.mkdir()
    (d / "10-ok").write_text("#!/bin/sh\nexit 0\n")
    (d / "20-no").write_text("#!/bin/sh\necho first\necho 'disk gone'\nexit 3\n")
    (d / "30-not-executable").write_text("#!/bin/sh\nexit 1\n")
    for p in (d / "10-ok", d / "20-no"):
        p.chmod(0o755)
    got = health.script_failures(SubprocessRunner(), d)
    assert got == [f"check {d / '20-no'} exited 3: disk gone"]
    assert health.script_failures(SubprocessRunner(), tmp_path / "none") == []

    class Units:
        dry_run = False

        def run(self, argv: list[str], *, readonly: bool = False, check: bool = True,
                on_line: object = None) -> object:
            from beadm.runner import Result
            states = {"a.service": "LoadState=loaded\nUnitFileState=enabled\nActiveState=failed",
                      "b.service": "LoadState=loaded\nUnitFileState=enabled\nActiveState=active",
                      "c.service": "LoadState=not-found\nUnitFileState=\nActiveState=inactive"}
            return Result(tuple(argv), 0, states[argv[-1]], "")

    units = ("a.service", "b.service", "c.service")
    got = health.unit_failures(Units(), units)  # type: ignore[arg-type]
    assert got == ["a.service is failed"]
