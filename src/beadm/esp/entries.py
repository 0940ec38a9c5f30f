"""Boot Loader Specification type #1 entry files: names, ids, rendering and parsing.

beadm's entries are ``loader/entries/beadm-<be>-<kver>.conf``. systemd-boot (v245+) uses
the file name, lowercased, as the entry id; beadm therefore writes the name already in
lower case, so the id is exactly the file name. Two BEs whose names differ only in case
would share ids: :func:`entry_filename` callers refuse that (see ``backend``).

The BE an entry belongs to is recorded in a comment line (``# beadm-be <name>``) that
the loader skips, so the original case of the name survives.
"""

from __future__ import annotations

import re

from beadm.record import record

PREFIX = "beadm-"
SUFFIX = ".conf"
STORE_DIR = "beadm"  # folder on the ESP holding the content-addressed kernel store
_BE_TAG = "# beadm-be "
_COUNTER = re.compile(r"^(?P<base>.*?)(?:\+\d+(?:-\d+)?)?(?P<ext>\.conf)?$")


def entry_filename(be: str, kver: str) -> str:
    """The file name (== systemd-boot id) of BE ``be``'s entry for kernel ``kver``."""
    return f"{PREFIX}{be}-{kver}{SUFFIX}".lower()


def strip_counter(entry_id: str) -> str:
    """``x+1-2.conf`` -> ``x.conf``: the id without a boot-counting suffix."""
    m = _COUNTER.match(entry_id)
    assert m is not None  # the pattern matches every string
    return m.group("base") + (m.group("ext") or "")


def tries_left(entry_id: str) -> int | None:
    """Boot-counting tries left encoded in an entry file name, None when not counted."""
    m = re.search(r"\+(\d+)(?:-\d+)?\.conf$", entry_id)
    return int(m.group(1)) if m else None


def bes_of_id(entry_id: str, names: list[str]) -> list[str]:
    """Every BE (among ``names``) that may own this beadm entry id, best first.

    The id holds the BE name lowercased, a ``-`` and a kernel version (which starts with
    a digit). The longest name wins (``test-2`` over ``test`` for ``beadm-test-2-6.1.conf``:
    ``test`` would need a kernel version ``2-6.1``); names of that length that differ only
    in case (``pve-2``, ``Pve-2``) all stay candidates, the one spelled exactly as in the
    id (all lowercase) first. Only the entry's ``# beadm-be`` tag can tell such names apart.
    """
    base = strip_counter(entry_id.lower())
    if not base.startswith(PREFIX):
        return []
    rest = base[len(PREFIX) :]
    found = []
    for n in names:
        low = n.lower() + "-"
        if rest.startswith(low) and rest[len(low) : len(low) + 1].isdigit():
            found.append(n)
    if not found:
        return []
    longest = max(len(n) for n in found)
    return sorted((n for n in found if len(n) == longest), key=lambda n: (n != n.lower(), n))


def be_of_id(entry_id: str, names: list[str]) -> str | None:
    """The most likely BE (among ``names``) of a beadm entry id, without reading the entry
    (see :func:`bes_of_id`; when several names differ only in case, read the tag)."""
    found = bes_of_id(entry_id, names)
    return found[0] if found else None


@record
class Entry:
    """One entry file's content (only the keys beadm uses or must preserve)."""

    title: str = ""
    version: str = ""
    options: str = ""
    linux: str = ""
    efi: str = ""  # an EFI program instead of a kernel (PVE 9's memtest86+ entry); never beadm's
    initrd: tuple[str, ...] = ()
    sort_key: str = ""
    be: str = ""  # from the ``# beadm-be`` comment; empty for foreign entries
    other: tuple[tuple[str, str], ...] = ()

    def render(self) -> str:
        lines = []
        if self.be:
            lines.append(f"{_BE_TAG}{self.be}")
        lines.append(f"title {self.title}")
        if self.version:
            lines.append(f"version {self.version}")
        if self.sort_key:
            lines.append(f"sort-key {self.sort_key}")
        lines.append(f"options {self.options}")
        if self.linux:
            lines.append(f"linux {self.linux}")
        if self.efi:
            lines.append(f"efi {self.efi}")
        lines.extend(f"initrd {i}" for i in self.initrd)
        lines.extend(f"{k} {v}" for k, v in self.other)
        return "\n".join(lines) + "\n"

    def root_dataset(self) -> str | None:
        """The dataset the last ``root=ZFS=`` of the options names (the one that boots)."""
        found = None
        for tok in self.options.split():
            if tok.startswith("root="):
                found = tok[len("root=ZFS=") :] if tok.startswith("root=ZFS=") else None
        return found

    def store_paths(self) -> list[str]:
        """ESP-relative paths of the files this entry needs (``linux`` or ``efi``, and
        ``initrd``s)."""
        return [p.lstrip("/") for p in (self.linux, self.efi, *self.initrd) if p]


def parse(text: str) -> Entry:
    """Parse an entry file; unknown keys are kept in ``other``."""
    vals: dict[str, str] = {}
    initrd: list[str] = []
    other: list[tuple[str, str]] = []
    be = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(_BE_TAG.strip()):
            be = line[len(_BE_TAG.strip()) :].strip()
            continue
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "initrd":
            initrd.append(value)
        elif key in ("title", "version", "options", "linux", "efi", "sort-key"):
            if key == "options" and "options" in vals:
                vals[key] += " " + value  # several options lines are concatenated
            else:
                vals[key] = value
        else:
            other.append((key, value))
    return Entry(
        title=vals.get("title", ""),
        version=vals.get("version", ""),
        options=vals.get("options", ""),
        linux=vals.get("linux", ""),
        efi=vals.get("efi", ""),
        initrd=tuple(initrd),
        sort_key=vals.get("sort-key", ""),
        be=be,
        other=tuple(other),
    )


def title_for(be: str, description: str, kver: str) -> str:
    desc = " ".join(description.split())  # one line, whatever the admin typed
    return f"{be} - {desc} ({kver})" if desc else f"{be} ({kver})"
