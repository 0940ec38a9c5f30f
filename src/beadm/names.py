"""BE and snapshot name validation.

A BE name is one ZFS dataset component: letters, digits and ``-_.:``; not empty, not
``.``/``..``, no leading ``-``, no trailing ``:`` (some loaders choke on it), at most
:data:`MAX_NAME_LEN` characters. A *new* BE name (create, rename, init) must also be valid
in a FAT file name, so ``:`` is refused there (:func:`check_new_be_name`); an existing BE
with ``:`` in its name can still be listed, mounted, renamed and destroyed. Names are
literals everywhere: nothing here or elsewhere builds a regex, glob or sed script from a
name.
"""

from __future__ import annotations

from beadm.errors import InvalidNameError

#: Longest BE or snapshot name accepted. The whole dataset name (pool/ROOT/NAME/child@snap)
#: must also fit ZFS's 255-character limit; ``beadm.be`` checks that at create time.
MAX_NAME_LEN = 100

#: ZFS's limit for a whole dataset or snapshot name.
MAX_DATASET_LEN = 255

_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


_HINT = "use letters, digits, '-', '_', '.', ':'"
_NEW_HINT = "use letters, digits, '-', '_', '.'"  # a new BE name: no ':' (FAT_INVALID)


def check_component(name: str, what: str = "BE name", *, hint: str = _HINT) -> str:
    """Return ``name`` if it is a valid BE (or snapshot) name, else raise InvalidNameError
    (``hint``: which characters to use, as the message says)."""
    shown = repr(name) if name else "''"
    if not name:
        raise InvalidNameError(f"invalid {what} {shown}: empty")
    if len(name) > MAX_NAME_LEN:
        raise InvalidNameError(f"invalid {what}: longer than {MAX_NAME_LEN} characters")
    bad = sorted({c for c in name if c not in _ALLOWED})
    if bad:
        listed = " ".join(repr(c) for c in bad)
        raise InvalidNameError(
            f"invalid {what} {shown}: character {listed} not allowed ({hint})"
        )
    if name.startswith("-"):
        raise InvalidNameError(f"invalid {what} {shown}: must not start with '-'")
    if name.endswith(":"):
        raise InvalidNameError(f"invalid {what} {shown}: must not end with ':'")
    if name in (".", ".."):
        raise InvalidNameError(f"invalid {what} {shown}")
    return name


def check_be_name(name: str) -> str:
    """Validate the name of an existing BE (one dataset component)."""
    return check_component(name, "BE name")


#: Characters of a valid dataset component that Linux's vfat refuses in a file name. A
#: BE's name becomes part of its boot entries' file names on the ESPs, so a new BE name
#: (create, rename, init) must not contain them.
FAT_INVALID = frozenset(':')


def check_new_be_name(name: str) -> str:
    """Validate a name a BE is about to get (create, rename, init): a valid dataset
    component that is also valid in a FAT file name."""
    check_component(name, "BE name", hint=_NEW_HINT)
    bad = sorted({c for c in name if c in FAT_INVALID})
    if bad:
        listed = " ".join(repr(c) for c in bad)
        raise InvalidNameError(
            f"invalid BE name {name!r}: character {listed} not allowed in a new BE name "
            f"(its boot entries are files on a FAT ESP; {_NEW_HINT})"
        )
    return name


def same_but_case(name: str, existing: list[str]) -> str | None:
    """The first of ``existing`` that differs from ``name`` only in case (FAT file names
    and systemd-boot entry ids are case-insensitive), else None."""
    folded = name.casefold()
    return next((e for e in existing if e != name and e.casefold() == folded), None)


def split_be_snapshot(spec: str) -> tuple[str, str | None]:
    """Split ``BE`` or ``BE@snap`` into a validated (be, snap-or-None)."""
    if "@" in spec:
        be, _, snap = spec.partition("@")
        return check_be_name(be), check_component(snap, "snapshot name")
    return check_be_name(spec), None
