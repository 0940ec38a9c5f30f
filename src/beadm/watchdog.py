"""The trial boot's dead man's switch: the kernel's software watchdog (``softdog``).

A trial entry (``beadm activate --trial``) carries ``softdog.soft_margin=S
softdog.soft_active_on_boot=1``; ``beadm-trial-watchdog.service`` (installed in every BE,
enabled in ``sysinit.target``, ordered before ``local-fs-pre.target`` so that a failing mount
cannot send the boot to emergency mode first) loads the module when those options are on the
kernel command line. ``soft_active_on_boot`` starts the timer at load with nobody feeding it:
unless something stops it, the machine is reset S seconds later (the kernel's emergency
restart: no shutdown runs). So a trial boot that hangs anywhere after the module's load
(emergency mode waiting for a root password, a unit that never finishes, a stuck health
check) spends its try like a panic does, and the loader's boot counting takes it from there.

``beadm trial-boot`` stops it once the checks passed (:func:`disarm`): the magic close,
``V`` written to the device and the device closed (Debian builds the kernel without
``WATCHDOG_NOWAYOUT``). A device another program holds open (Proxmox's ``watchdog-mux`` uses
softdog for HA fencing and feeds it every second) is left to that program.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from beadm.errors import UsageError

DEFAULT = 600  # seconds from the module's load (early in the boot) to the reset
ARMED = "softdog.soft_active_on_boot=1"  # on the kernel command line: a trial boot's watchdog
MARGIN = "softdog.soft_margin="
SOFTDOG_MARGIN = 60  # softdog's own default soft_margin
#: what ``trial-boot`` keeps of the watchdog's time for the confirmation itself, once it has
#: the lock (it waits for the lock no longer than the time left minus this)
SETTLE_SECONDS = 60.0
MIN, MAX = 30, 65535  # softdog's soft_margin is an unsigned int of seconds; 65535 is plenty
IDENTITY = "Software Watchdog"  # softdog's identity in /sys/class/watchdog/*/identity
SYSFS = Path("/sys/class/watchdog")
DEV = Path("/dev")


def check(seconds: int) -> None:
    """0 (off) or MIN..MAX, else a usage error."""
    if seconds != 0 and not MIN <= seconds <= MAX:
        raise UsageError(f"--watchdog must be 0 (off) or {MIN} to {MAX} seconds, "
                         f"not {seconds}")


def time_left(proc: Path = Path("/proc")) -> float | None:
    """At least how many seconds the trial's watchdog leaves before it resets the machine:
    its margin (``softdog.soft_margin=`` on the kernel command line) less the time since
    the kernel started (``/proc/uptime``; the module loads a little later, so the real time
    left is a little longer). None when the command line arms no watchdog (no trial boot,
    ``--watchdog 0``) or cannot be read."""
    try:
        words = (proc / "cmdline").read_text(encoding="utf-8").split()
        uptime = float((proc / "uptime").read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if ARMED not in words:
        return None
    margin = SOFTDOG_MARGIN
    for w in words:
        if w.startswith(MARGIN) and w[len(MARGIN):].isdigit():
            margin = int(w[len(MARGIN):])
    return margin - uptime


def disarm(sysfs: Path = SYSFS, dev: Path = DEV) -> list[str]:
    """Stop every software watchdog no other program holds; one note per watchdog left
    running (empty: all were stopped). Its ``state`` in sysfs cannot tell: armed by
    ``soft_active_on_boot`` and opened by no one, softdog runs while sysfs says
    ``inactive`` (seen in the lab), so each one is opened and closed with the magic
    character (a stopped one is started and stopped again at once)."""
    notes: list[str] = []
    try:
        wds = sorted(sysfs.iterdir())
    except FileNotFoundError:
        return notes
    for wd in wds:
        if _read(wd / "identity") != IDENTITY:
            continue
        node = dev / wd.name
        try:
            fd = os.open(node, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                notes.append(f"the software watchdog {node} is held by another program "
                             "(Proxmox's watchdog-mux feeds it): left to it")
            else:
                notes.append(f"the software watchdog {node} could not be stopped "
                             f"({exc.strerror}): the machine resets when it expires")
            continue
        try:
            os.write(fd, b"V")  # the magic close: closing now stops the timer
        finally:
            os.close(fd)
        if _read(wd / "nowayout") == "1":
            notes.append(f"the software watchdog {node} has nowayout set and cannot be "
                         "stopped: the machine resets when it expires")
    return notes


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""
