"""Debian version numbers compared as dpkg compares them (Debian policy 5.6.12,
deb-version(7)): ``[epoch:]upstream_version[-debian_revision]``.

The epoch is compared as a number (none is 0); then the upstream version, then the
revision (none compares as ``0``), each the same way: alternately the longest run of
non-digits, compared character by character where a tilde sorts before everything (even
the end of the run), letters before the other characters, and the end before any
character but a tilde; then the longest run of digits, compared as a number (none is 0).
"""

from __future__ import annotations


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is lower than, equal to or higher than ``b``."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def _split(version: str) -> tuple[int, str, str]:
    """(epoch, upstream version, revision)."""
    epoch, colon, rest = version.partition(":")
    if not colon:
        epoch, rest = "0", version
    upstream, hyphen, revision = rest.rpartition("-")
    if not hyphen:
        upstream, revision = rest, ""
    return (int(epoch) if epoch.isdigit() else 0), upstream, revision


def _digit(c: str) -> bool:
    return "0" <= c <= "9"


def _order(c: str) -> int:
    """A character's weight in a run of non-digits ("" is the end of the run)."""
    if c == "~":
        return -1
    if c == "":
        return 0
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        # the runs of non-digits, character by character (the end of one is "")
        while (i < len(a) and not _digit(a[i])) or (j < len(b) and not _digit(b[j])):
            ca = a[i] if i < len(a) and not _digit(a[i]) else ""
            cb = b[j] if j < len(b) and not _digit(b[j]) else ""
            if _order(ca) != _order(cb):
                return -1 if _order(ca) < _order(cb) else 1
            i += 1 if ca else 0
            j += 1 if cb else 0
        # the runs of digits, as numbers
        si, sj = i, j
        while i < len(a) and _digit(a[i]):
            i += 1
        while j < len(b) and _digit(b[j]):
            j += 1
        na, nb = int(a[si:i] or "0"), int(b[sj:j] or "0")
        if na != nb:
            return -1 if na < nb else 1
    return 0
