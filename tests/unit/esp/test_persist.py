"""Issue 11 item 5: the apt hook and the shutdown unit that re-assert the activated BE where no
kernel hook follows a loader.conf rewrite (beadm.esp.persist)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from beadm.esp import persist
from worlds import REPO
from worlds.sdboot import UUIDS, PropRunner, World

REPO = REPO


def test_repo_copies_match_installed_text() -> None:
    """hooks/ holds what the Debian package installs; beadm init writes the same text."""
    assert (REPO / "hooks" / "99beadm").read_text() == persist.APT_TEXT
    assert (REPO / "hooks" / persist.UNIT_NAME).read_text() == persist.UNIT_TEXT
    install = (REPO / "debian" / "beadm.install").read_text().splitlines()
    assert "hooks/99beadm etc/apt/apt.conf.d/" in install
    # the unit goes through dh_installsystemd (its release's unit dir): a link to hooks/
    link = REPO / "debian" / f"beadm.{persist.UNIT_NAME}"
    assert link.is_symlink() and link.resolve() == (REPO / "hooks" / persist.UNIT_NAME)
    assert not any(persist.UNIT_NAME in line for line in install)
    rules = (REPO / "debian" / "rules").read_text()
    for name, text in ((persist.UNIT_NAME, persist.UNIT_TEXT),
                       (persist.TRIAL_UNIT_NAME, persist.TRIAL_UNIT_TEXT),
                       (persist.WATCHDOG_UNIT_NAME, persist.WATCHDOG_UNIT_TEXT)):
        assert (REPO / "hooks" / name).read_text() == text, name
        link = REPO / "debian" / f"beadm.{name}"
        assert link.is_symlink() and link.resolve() == (REPO / "hooks" / name)
        assert f"dh_installsystemd --name={name.removesuffix('.service')}" in rules
    for _rel, name in persist.LINKS:  # every enabled unit is one of them
        assert (REPO / "hooks" / name).exists()


def test_unit_runs_sync_at_stop_after_cleanup() -> None:
    lines = persist.UNIT_TEXT.splitlines()
    assert "RemainAfterExit=yes" in lines and "Type=oneshot" in lines
    stop = next(ln for ln in lines if ln.startswith("ExecStop="))
    assert "beadm sync --if-used" in stop and stop.rstrip("'").endswith("true")
    after = " ".join(ln for ln in lines if ln.startswith("After="))
    for unit in ("proxmox-boot-cleanup.service", "zfs-mount.service", "local-fs.target",
                 "sys-firmware-efi-efivars.mount"):
        assert unit in after
    assert "WantedBy=multi-user.target" in lines


def test_apt_hook_never_fails_apt(tmp_path: Path) -> None:
    """The Post-Invoke command exits 0 and prints one line when beadm fails, nothing when it
    succeeds (a stand-in beadm on PATH; uuids tests skipped by faking /etc through sh)."""
    cmd = persist.APT_TEXT.split('DPkg::Post-Invoke { "', 1)[1].rsplit('"; };', 1)[0]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    beadm = bindir / "beadm"
    # the real command tests /etc/kernel/...: run it with those paths pointed at tmp_path
    etc = tmp_path / "etc-kernel"
    etc.mkdir()
    (etc / "proxmox-boot-uuids").write_text("AAAA-0001\n")
    cmd = cmd.replace("/etc/kernel/", f"{etc}/")
    env = dict(os.environ, PATH=f"{bindir}:/usr/bin:/bin")
    for rc, out in ((0, ""), (3, "beadm: sync after dpkg failed")):
        beadm.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/args\nexit {rc}\n")
        beadm.chmod(0o755)
        res = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True)
        assert res.returncode == 0
        assert (tmp_path / "args").read_text() == "sync --if-used\n"
        assert res.stdout == "" and res.stderr.startswith(out)
        assert len(res.stderr.splitlines()) == (1 if out else 0)
    beadm.unlink()
    res = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True)
    assert (res.returncode, res.stderr) == (0, "")  # beadm removed: the hook does nothing


def test_install_is_idempotent_and_enables_the_unit(tmp_path: Path) -> None:
    assert persist.install(tmp_path) is True
    assert (tmp_path / persist.APT_CONF).read_text() == persist.APT_TEXT
    assert (tmp_path / persist.UNIT).read_text() == persist.UNIT_TEXT
    assert str((tmp_path / persist.WANTS).readlink()) == "../" + persist.UNIT_NAME
    assert persist.install(tmp_path) is False
    (tmp_path / persist.APT_CONF).write_text("stale")
    assert persist.install(tmp_path) is True
    assert (tmp_path / persist.APT_CONF).read_text() == persist.APT_TEXT


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    import io

    out = io.StringIO()
    assert persist.install(tmp_path, dry_run=True, out=out) is True
    assert list(tmp_path.iterdir()) == []
    assert "would install" in out.getvalue() and "would enable" in out.getvalue()


def test_start_now(tmp_path: Path) -> None:
    r = PropRunner()
    assert persist.start_now(r, systemd=tmp_path / "absent") is None
    assert r.calls == []
    (tmp_path / "systemd").mkdir()
    assert persist.start_now(r, systemd=tmp_path / "systemd") is None
    assert r.calls == [("systemctl", "daemon-reload"),
                       ("systemctl", "start", persist.UNIT_NAME)]


def test_init_and_create_install_them_into_the_be(sdboot_world: World) -> None:
    w = sdboot_world
    w.backend.init(w.ref("pve-1"))
    root = w.bes["rpool/ROOT/pve-1"]
    assert (root / persist.APT_CONF).read_text() == persist.APT_TEXT
    assert (root / persist.UNIT).read_text() == persist.UNIT_TEXT
    w.add_be("pve-2", {"6.8.12-1-pve": b"k"})
    w.backend.post_create(w.ref("pve-2"))
    assert (w.bes["rpool/ROOT/pve-2"] / persist.APT_CONF).is_file()
    assert (w.bes["rpool/ROOT/pve-2"] / persist.WANTS).is_symlink()
    assert not any(c[0] == "systemctl" for c in w.runner.calls)  # only for the real "/"
    assert all(w.booted(u) == "pve-1" for u in UUIDS)
