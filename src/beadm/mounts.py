"""What is mounted where, from /proc/self/mountinfo (path injectable for tests)."""

from __future__ import annotations

from pathlib import Path

from beadm.record import record

MOUNTINFO = Path("/proc/self/mountinfo")


@record
class Mount:
    """One line of mountinfo: what (``source``, a dataset for zfs) is mounted where."""

    mountpoint: str
    fstype: str
    source: str
    options: str = ""  # the per-mount options ("rw,relatime", "ro,...")

    @property
    def writable(self) -> bool:
        return "rw" in self.options.split(",")


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (``\\040`` for a space, ...)."""
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text (see proc(5)); malformed lines are skipped."""
    mounts: list[Mount] = []
    for line in text.split("\n"):  # not splitlines: a path may hold \x85, U+2028, ...
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf = left.split(" ")
        rf = right.split(" ")
        if len(lf) < 5 or len(rf) < 2:
            continue
        mounts.append(Mount(_unescape(lf[4]), rf[0], _unescape(rf[1]),
                            lf[5] if len(lf) > 5 else ""))
    return mounts


def read_mounts(path: Path = MOUNTINFO) -> list[Mount]:
    """All mounts, in mount order."""
    return parse_mountinfo(path.read_text(encoding="utf-8", errors="surrogateescape"))


def root_dataset(mounts: list[Mount]) -> str | None:
    """The ZFS dataset mounted at ``/`` (the last mount there wins), or None."""
    found: str | None = None
    for m in mounts:
        if m.mountpoint == "/":
            found = m.source if m.fstype == "zfs" else None
    return found


def zfs_mounts(mounts: list[Mount]) -> dict[str, list[str]]:
    """Dataset name -> the directories it is mounted at (zfs mounts only)."""
    out: dict[str, list[str]] = {}
    for m in mounts:
        if m.fstype == "zfs":
            out.setdefault(m.source, []).append(m.mountpoint)
    return out
