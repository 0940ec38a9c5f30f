"""The systemd services that write the shared state (beadm.pvestate): which of them run, which
a move stops (with what requires them), and starting them again after a failed move.

:mod:`beadm.statemove` stops them for the copy of a path and starts them again on the new
dataset; :func:`cgroup_unit` names the unit of a process, so that the files its own
services hold open do not refuse the move they are stopped for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from beadm.errors import BeadmError
from beadm.runner import Runner

log = logging.getLogger("beadm.pvestate")  # the feature's one logger


def parse_show(text: str) -> dict[str, str]:
    """``systemctl show -p A -p B UNIT`` output (``Key=Value`` lines) as a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def active_services(runner: Runner) -> set[str]:
    """The active services, none where systemd does not run."""
    argv = ["systemctl", "list-units", "--type=service", "--state=active", "--plain",
            "--no-legend", "--no-pager"]
    res = runner.run(argv, readonly=True, check=False)
    if res.returncode != 0:  # not booted with systemd (a rescue system): nothing runs
        log.info("no service manager: %s", res.stderr.strip())
        return set()
    return {line.split()[0] for line in res.stdout.splitlines() if line.split()}


def units_to_stop(runner: Runner, stop: Sequence[str]) -> list[str]:
    """The active units among ``stop`` and the units that require them (systemd stops those
    too), to be started again after the move."""
    if not stop:
        return []
    active = active_services(runner)
    units: list[str] = []
    for unit in stop:
        if unit not in active:
            continue
        units.append(unit)
        argv = ["systemctl", "show", "-p", "RequiredBy", "-p", "BoundBy", unit]
        info = parse_show(runner.run(argv, readonly=True).stdout)
        deps = info.get("RequiredBy", "").split() + info.get("BoundBy", "").split()
        units += sorted(u for u in set(deps) if u in active and u not in units)
    return units


def cgroup_unit(proc: Path, pid: int) -> str:
    """The systemd unit of process ``pid`` (under ``proc``): the last component of its
    cgroup path."""
    try:
        text = (proc / str(pid) / "cgroup").read_text(encoding="utf-8")
    except OSError:
        return ""
    for line in text.splitlines():
        unit = line.rpartition("/")[2]
        if unit.endswith((".service", ".scope")):
            return unit
    return ""


def restart_after_failure(runner: Runner, units: Sequence[str]) -> None:
    """Best effort: start again what a failed move stopped."""
    if units:
        try:
            runner.run(["systemctl", "start", *units])
        except BeadmError as exc:
            log.warning("could not start %s again: %s", " ".join(units), exc)
