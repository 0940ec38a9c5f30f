"""Which entry systemd-boot (v250+) boots from one ESP, as documented.

Order: ``LoaderEntryOneShot`` → ``LoaderEntryDefault`` → ``loader.conf`` ``default`` →
first entry in sort order. Patterns are globs matched against ids (file names,
lowercased, counter included: what the lab saw on v252). Entries named ``auto-*`` and
entries whose program (``linux``, or ``efi`` for an EFI program such as the
``memtest86+x64.efi.conf`` entry that PVE 9's ``proxmox-boot-tool init`` writes) is missing
are dropped; an ``efi`` entry whose file is there is listed, and booted, like any other.
Sort: entries with no tries left last; entries with a ``sort-key`` first (by sort-key, then
version descending); then by id, descending (natural order).
"""

from __future__ import annotations

import fnmatch
import functools
from pathlib import Path

from beadm.esp import entries as ent
from beadm.esp.kernels import version_key


def usable(root: Path, entries: dict[str, ent.Entry]) -> dict[str, ent.Entry]:
    """Entries the loader would list: id -> entry."""
    out: dict[str, ent.Entry] = {}
    for fname, e in entries.items():
        eid = fname.lower()
        program = e.linux or e.efi
        if eid.startswith("auto-") or not program:
            continue
        if not (root / program.lstrip("/")).is_file():
            continue
        if any(not (root / i.lstrip("/")).is_file() for i in e.initrd):
            continue  # the loader would fail on it: count it as unusable
        out[eid] = e
    return out


def _vercmp(a: str, b: str) -> int:
    ka, kb = version_key(a), version_key(b)
    return (ka > kb) - (ka < kb)


def _compare(a: tuple[str, ent.Entry], b: tuple[str, ent.Entry]) -> int:
    (ida, ea), (idb, eb) = a, b
    xa, xb = ent.tries_left(ida) == 0, ent.tries_left(idb) == 0
    if xa != xb:
        return 1 if xa else -1
    if bool(ea.sort_key) != bool(eb.sort_key):
        return -1 if ea.sort_key else 1
    if ea.sort_key and ea.sort_key != eb.sort_key:
        return -1 if ea.sort_key < eb.sort_key else 1
    if ea.sort_key and ea.version != eb.version:
        return -_vercmp(ea.version, eb.version)
    return -_vercmp(ida, idb)


def sort_ids(entries: dict[str, ent.Entry]) -> list[str]:
    return [eid for eid, _ in sorted(entries.items(), key=functools.cmp_to_key(_compare))]


def match(pattern: str, ids: list[str]) -> str | None:
    """First id in ``ids`` (sorted) matching the glob ``pattern``."""
    for eid in ids:
        if fnmatch.fnmatchcase(eid, pattern) or fnmatch.fnmatchcase(eid, pattern.lower()):
            return eid
    return None


def pick(root: Path, entries: dict[str, ent.Entry], *, oneshot: str | None,
         efi_default: str | None, conf_default: str | None) -> str | None:
    """The id systemd-boot boots from this ESP, or None when nothing is bootable."""
    ok = usable(root, entries)
    ids = sort_ids(ok)
    for pattern in (oneshot, efi_default, conf_default):
        if pattern and pattern != "@saved":
            hit = match(pattern, ids)
            if hit:
                return hit
    return ids[0] if ids else None
