"""Health checks of a trial boot (``beadm activate --trial``), run by ``beadm trial-boot``.

A trial boot is good when:

* every Proxmox unit of :data:`UNITS` that this BE has and that is enabled is active
  (``pve-cluster``: ``/etc/pve``; ``pveproxy``/``pvedaemon``: the API and web UI;
  ``pvestatd``; ``zfs-mount``: the storage datasets);
* every executable file in ``/etc/beadm/checks.d/`` (in name order) exits 0. A check
  prints why it failed; beadm keeps its last line.

Each failure is one line; an empty list means the boot is good.
"""

from __future__ import annotations

from pathlib import Path

from beadm.runner import Runner

CHECKS_DIR = Path("/etc/beadm/checks.d")
UNITS = ("pve-cluster.service", "pveproxy.service", "pvedaemon.service", "pvestatd.service",
         "zfs-mount.service")


def unit_failures(runner: Runner, units: tuple[str, ...] = UNITS) -> list[str]:
    """Enabled units of ``units`` that are not active (absent or disabled ones are skipped)."""
    out: list[str] = []
    for unit in units:
        r = runner.run(["systemctl", "show", "--property=LoadState,UnitFileState,ActiveState",
                        unit], readonly=True, check=False)
        props = dict(line.partition("=")[::2] for line in r.stdout.splitlines())
        if props.get("LoadState") != "loaded" or props.get("UnitFileState") != "enabled":
            continue
        if props.get("ActiveState") != "active":
            out.append(f"{unit} is {props.get('ActiveState') or 'not active'}")
    return out


def script_failures(runner: Runner, checks_dir: Path = CHECKS_DIR) -> list[str]:
    """Executables in ``checks_dir`` that exit non-zero, with their last output line."""
    out: list[str] = []
    try:
        scripts = sorted(p for p in checks_dir.iterdir()
                         if p.is_file() and not p.name.startswith(".") and _executable(p))
    except FileNotFoundError:
        return out
    for script in scripts:
        r = runner.run([str(script)], readonly=True, check=False)
        if r.returncode != 0:
            said = (r.stdout + r.stderr).strip().splitlines()
            why = f": {said[-1]}" if said else ""
            out.append(f"check {script} exited {r.returncode}{why}")
    return out


def _executable(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o111)


def failures(runner: Runner, *, checks_dir: Path = CHECKS_DIR,
             units: tuple[str, ...] = UNITS) -> list[str]:
    return unit_failures(runner, units) + script_failures(runner, checks_dir)
