"""What an apt run is about to do, from apt's ``DPkg::Pre-Install-Pkgs`` hook information.

apt runs each ``DPkg::Pre-Install-Pkgs`` command once per dpkg session (before any dpkg
call) and writes, on its stdin, what the session does. With
``DPkg::Tools::Options::<first word of the command>::Version "3"`` that is ``VERSION 3``,
apt's configuration, an empty line, then one line per action::

    NAME OLDVER OLDARCH OLDMA < NEWVER NEWARCH NEWMA /var/cache/apt/archives/x.deb
    NAME OLDVER OLDARCH OLDMA > - - none **REMOVE**
    NAME OLDVER OLDARCH OLDMA = NEWVER NEWARCH NEWMA **CONFIGURE**

(``-`` for a version that is not there; ``<`` upgrade or install, ``>`` downgrade or
remove, ``=`` reinstall.) Version 2 has the same lines without the architecture fields;
version 1 only the ``.deb`` paths. All three are understood, so a different option key
degrades the description, never the snapshot.

Also here: the key of "this apt run" (unattended-upgrades calls dpkg several times in one
run), from ``/proc``: the first ancestor that is not a shell, its start time and the boot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

from beadm.record import record

_KERNEL = re.compile(r"^(?:(?:proxmox|pve)-kernel-\d|linux-image-)")
_SHELLS = frozenset({"sh", "dash", "bash", "busybox"})
#: Descriptions stay short enough to read in ``beadm list -s``.
DESCRIPTION_LEN = 200


@record
class Change:
    name: str
    old: str  # "" when not installed before
    new: str  # "" when removed
    action: str  # "install", "upgrade", "downgrade", "reinstall", "remove", "configure"


def parse(text: str) -> tuple[Change, ...]:
    """The actions in the hook's input (any version); unknown lines are skipped."""
    lines = text.split("\n")
    body = lines
    if lines and lines[0].startswith("VERSION "):
        try:
            body = lines[lines.index("", 1) + 1 :]
        except ValueError:
            body = []
    out: list[Change] = []
    for line in body:
        f = line.split()
        if len(f) == 9:  # version 3
            name, old, rel, new, action = f[0], f[1], f[4], f[5], f[8]
        elif len(f) == 5:  # version 2
            name, old, rel, new, action = f
        elif len(f) == 1 and f[0].endswith(".deb"):  # version 1: a .deb path
            parts = Path(f[0]).name.split("_")
            if len(parts) < 2:
                continue
            out.append(Change(parts[0], "", unquote(parts[1]), "install"))
            continue
        else:
            continue
        old = "" if old == "-" else old
        new = "" if new == "-" else new
        out.append(Change(name, old, new, _action(rel, old, new, action)))
    return tuple(out)


def _action(rel: str, old: str, new: str, action: str) -> str:
    if action == "**CONFIGURE**":
        return "configure"
    if action == "**REMOVE**" or not new:
        return "remove"
    if not old:
        return "install"
    return {"<": "upgrade", ">": "downgrade"}.get(rel, "reinstall")


def changes_packages(changes: Iterable[Change]) -> bool:
    """True when the run unpacks or removes a package (not only configures)."""
    return any(c.action != "configure" for c in changes)


def _major(version: str) -> str:
    m = re.match(r"^(?:\d+:)?(\d+)", version)
    return m.group(1) if m else ""


def importance(changes: Iterable[Change]) -> str:
    """Why a snapshot before these changes is important, or "" if it is not: a kernel
    installed or upgraded, or pve-manager installed or moved to another major version."""
    why: list[str] = []
    for c in changes:
        if c.action in ("configure", "remove"):
            continue
        if _KERNEL.match(c.name) and "kernel" not in why:
            why.append("kernel")
        if c.name == "pve-manager" and _major(c.old) != _major(c.new):
            why.append(f"pve-manager {_major(c.old) or 'new'}->{_major(c.new)}")
    return ", ".join(sorted(why, key=lambda w: w != "kernel"))


def describe(changes: Iterable[Change]) -> str:
    """One printable line: ``apt: upgrade 3 (a, b, c); install 1 (d); remove 1 (e)``,
    the names cut to keep it under :data:`DESCRIPTION_LEN` characters."""
    groups: dict[str, list[str]] = {}
    for c in changes:
        if c.action != "configure" and c.name not in groups.get(c.action, []):
            groups.setdefault(c.action, []).append(c.name)
    parts = []
    for action in ("upgrade", "install", "remove", "downgrade", "reinstall"):
        names = groups.get(action)
        if names:
            parts.append((action, names))
    text = "apt: " + "; ".join(f"{a} {len(n)} ({', '.join(n)})" for a, n in parts)
    if len(text) <= DESCRIPTION_LEN:
        return _printable(text)
    # too long: counts and as many names as fit
    short = "apt: " + "; ".join(f"{a} {len(n)}" for a, n in parts)
    names = [n for _, ns in parts for n in ns]
    shown: list[str] = []
    for n in names:
        if len(short) + len(", ".join([*shown, n])) + 10 > DESCRIPTION_LEN:
            break
        shown.append(n)
    return _printable(f"{short}: {', '.join(shown)}, ...")


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def run_key(proc: Path = Path("/proc"), pid: int | None = None) -> str:
    """``BOOT_ID:PID:STARTTIME`` of the process that runs apt (the first ancestor of
    ``pid``, default our parent, that is not a shell); "" when ``/proc`` says nothing."""
    import os

    pid = os.getppid() if pid is None else pid
    try:
        boot = (proc / "sys/kernel/random/boot_id").read_text().strip()
        for _ in range(8):
            stat = (proc / str(pid) / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            if comm not in _SHELLS or int(fields[1]) <= 1:
                return f"{boot}:{pid}:{fields[19]}"
            pid = int(fields[1])  # the parent
    except (OSError, ValueError, IndexError):
        return ""
    return ""
