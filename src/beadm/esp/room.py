"""Room on the ESPs, for every loader: free space and clusters, fitting a BE's plan on tight
ESPs (its lean form, or BEs held as they are), the room a rename needs, and each ESP's usage
as ``prune``'s ESP floor sees it.

A kernel update must never fail for lack of the space beadm took: every fit keeps room for
Proxmox's next kernel (``headroom``: as large as the largest kernel + initrd pair Proxmox
keeps on the ESP, where the loader's layout keeps them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from beadm.backend import EspUsage
from beadm.errors import BootError
from beadm.esp import entries as ent
from beadm.esp.host import Esp, at_hand
from beadm.esp.notes import Notes
from beadm.esp.plan import Plan
from beadm.esp.store import EspStore, content_name
from beadm.record import record

log = logging.getLogger(__name__)

#: Proxmox's next kernel on one ESP, in bytes (the loader's layout says where it goes).
Headroom = Callable[[EspStore], int]
#: What a loader keeps on one ESP besides the stored kernels, for :func:`usage`: given the
#: ESP, the BE names and the cluster size, its own files (bytes, rounded to clusters, with
#: the BEs that need each) and, per stored file (``beadm/NAME``), the BEs whose entries name it.
Claims = Callable[[EspStore, list[str], int],
                  tuple[list[tuple[int, frozenset[str]]], dict[str, set[str]]]]


def free_space(path: Path) -> tuple[int, int]:
    """(bytes free for writing, block size) of the file system at ``path``."""
    v = os.statvfs(path)
    return v.f_bavail * v.f_frsize, max(v.f_bsize, v.f_frsize)


def clusters(size: int, cluster: int) -> int:
    """``size`` bytes rounded up to whole clusters (what a file takes on FAT)."""
    return -(-size // cluster) * cluster


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def root_pair_bytes(st: EspStore) -> int:
    """The largest kernel + initrd Proxmox keeps at the ESP root (GRUB mode)."""
    best = 0
    for vml in st.root.glob("vmlinuz-*"):
        ird = st.root / f"initrd.img-{vml.name[len('vmlinuz-'):]}"
        size = vml.stat().st_size + (ird.stat().st_size if ird.is_file() else 0)
        best = max(best, size)
    return best


def proxmox_pair_bytes(st: EspStore) -> int:
    """The largest pair Proxmox keeps in ``EFI/proxmox/`` (systemd-boot mode)."""
    return st.proxmox_pair_bytes()


# -- one BE on the ESPs at hand (create, activate, a trial) -----------------------------
def problems(esps: list[Esp], plan: Plan, headroom: Headroom, extra: int = 0) -> list[str]:
    """Why the ESPs at hand cannot take ``plan``'s kernel files that they do not hold yet
    (and ``extra`` clusters more: a menu rewritten whole) and still keep ``headroom``;
    empty when they can."""
    out = []
    for esp in esps:
        if (st := esp.store) is None:
            continue
        try:
            # Every file stored already (the usual activate, a create from the running BE)
            # and no menu to rewrite: nothing to fit, and no statvfs, which on FAT counts the
            # free clusters of the whole FAT the first time after a mount (~0.2 s an ESP
            # under emulation, issue 15). Names are cached: asking again is cheap.
            if not extra and not st.bytes_to_add(plan.files(), 1):
                continue
            free, cluster = free_space(st.root)
            need = st.bytes_to_add(plan.files(), cluster) + extra * cluster
            room = headroom(st)
        except OSError as exc:
            out.append(f"ESP {esp.uuid}: {exc.strerror or exc}")
            continue
        if need and free - need < room:
            out.append(f"ESP {esp.uuid} has {mib(free)} free; BE {plan.be.name}'s kernels "
                       f"need {mib(need)} and Proxmox's next kernel {mib(room)}")
    return out


def fit_one(esps: list[Esp], plan: Plan, notes: Notes, headroom: Headroom,
            extra: int = 0) -> Plan:
    """Before any ESP is written: ``plan`` if every ESP takes it with room to spare for
    Proxmox's next kernel, else its lean form (only the kernel the BE boots) if that fits,
    else nothing is written anywhere."""
    found = problems(esps, plan, headroom, extra)
    if not found:
        return plan
    lean = plan.lean()
    if lean.kernels != plan.kernels and not problems(esps, lean, headroom, extra):
        note_lean([plan.be.name], notes)
        return lean
    raise BootError("not enough room on the ESPs, nothing written: " + "; ".join(found)
                    + " (destroy an unused BE, or remove old kernels, then retry)")


def note_lean(names: list[str], notes: Notes) -> None:
    one = len(names) == 1
    notes.add(f"the ESPs are tight: {', '.join(names)} keep{'s' if one else ''} only the "
              f"kernel {'it boots' if one else 'they boot'} (and the running one), to leave "
              "room for Proxmox's next kernel")


def check_rename(esps: list[Esp], need: Callable[[EspStore, int], tuple[int, str]]) -> None:
    """Refuse a rename (BootError) when an ESP at hand lacks the room its new entries need:
    ``need(store, cluster)`` says how many bytes and for what (it may refuse: BootError)."""
    found: list[str] = []
    for st in at_hand(esps):
        try:
            free, cluster = free_space(st.root)
            size, what = need(st, cluster)
        except OSError as exc:
            found.append(f"ESP {st.uuid}: {exc.strerror}")
            continue
        except BootError as exc:
            found.append(exc.message)
            continue
        if free < size:
            found.append(f"ESP {st.uuid} has {free} bytes free, {what}")
    if found:
        raise BootError("not renaming: " + "; ".join(found))


# -- every BE at once (sync, check) ----------------------------------------------------
@record
class Room:
    """One ESP's space as the fit sees it (bytes, rounded up to clusters)."""

    store: EspStore
    free: int
    cluster: int
    held: int  # beadm's own stored kernels and initrds: freed when no entry needs them
    headroom: int  # Proxmox's largest kernel + initrd pair: what its next kernel needs

    def rounded(self, size: int) -> int:
        return clusters(size, self.cluster)


def rooms(esps: list[Esp], headroom: Headroom,
          entries: Callable[[EspStore], int]) -> list[Room]:
    """Every ESP at hand that could be measured; ``entries``: how many entry files (a
    cluster each) beadm keeps on it."""
    out = []
    for st in at_hand(esps):
        try:
            free, cluster = free_space(st.root)
            held = sum(clusters((st.root / ent.STORE_DIR / n).stat().st_size, cluster)
                       for n in st.store_files())
            held += entries(st) * cluster  # each entry file takes a cluster
            out.append(Room(st, free, cluster, held, headroom(st)))
        except OSError as exc:  # the writes will say it again, per ESP
            log.debug("ESP %s: cannot measure its space: %s", st.uuid, exc)
    return out


def fits(rooms: list[Room], plans: Iterable[Plan],
         kept: dict[str, set[str]] | None = None) -> bool:
    """Whether every ESP can hold ``plans``' files (and the stored files in ``kept``) with
    Proxmox's next kernel still fitting afterwards, and can take the missing ones before
    the old ones are freed (files are written first, freed last)."""
    wanted: dict[str, int] = {}
    entries = 0
    stores = [room.store for room in rooms]
    for plan in plans:
        entries += len(plan.kernels)
        for src, basename in plan.files():
            wanted[content_name(src, basename, stores)] = src.stat().st_size
    for room in rooms:
        sizes = dict(wanted)
        for name in (kept or {}).get(room.store.uuid, set()):
            path = room.store.root / ent.STORE_DIR / name
            if path.is_file():
                sizes[name] = path.stat().st_size
        have = set(room.store.store_files())
        total = sum(room.rounded(n) for n in sizes.values()) + entries * room.cluster
        new = sum(room.rounded(n) for name, n in sizes.items() if name not in have)
        if room.free + room.held - total < room.headroom or room.free - new < 0:
            return False
    return True


def stored_everywhere(rooms: list[Room], plan: Plan) -> bool:
    """Whether every ESP stores each of ``plan``'s kernel files already (content names)."""
    stores = [room.store for room in rooms]
    names = {content_name(src, basename, stores) for src, basename in plan.files()}
    return all(names <= set(room.store.store_files()) for room in rooms)


def fit_all(esps: list[Esp], plans: dict[str, Plan], notes: Notes, *, headroom: Headroom,
            entries: Callable[[EspStore], int],
            named: Callable[[list[str]], dict[str, set[str]]],
            record: Callable[[], str | None]) -> tuple[dict[str, Plan], dict[str, str]]:
    """What ``sync`` may store on the ESPs (``check`` compares with the same): every BE's
    plan when, with them, every ESP keeps room for Proxmox's next kernel; else every BE
    lean; else BEs one by one (the running BE, the activated one ``record()``, then by
    name), each lean if it fits and else held: it keeps the entries it has (returned with
    why). ``entries``: see :func:`rooms`; ``named(bes)``: per ESP, the stored files the
    entries of those BEs name now.

    Decided from the ESPs' totals (free + beadm's own files), not from what is stored
    now, so that repeated syncs agree with each other and with ``check``."""
    rooms_ = rooms(esps, headroom, entries)
    if not rooms_ or not plans:
        return plans, {}
    if fits(rooms_, plans.values()):
        return plans, {}
    leans = {n: p.lean() for n, p in plans.items()}
    if fits(rooms_, leans.values()):
        trimmed = sorted(n for n in plans if leans[n].kernels != plans[n].kernels)
        if trimmed:
            note_lean(trimmed, notes)
        return leans, {}
    first = record()
    order = sorted(plans, key=lambda n: (not plans[n].be.running, n != first, n))
    chosen: dict[str, Plan] = {}
    held: dict[str, str] = {}
    for n in order:
        rest = [x for x in order if x not in chosen and x != n]
        # a BE whose files every ESP stores already takes no room: holding it would free
        # nothing, and naming it as lacking room would send the admin the wrong way
        if stored_everywhere(rooms_, leans[n]) or \
                fits(rooms_, [*chosen.values(), leans[n]], named(rest)):
            chosen[n] = leans[n]
        else:
            held[n] = (f"BE {n}: no room for kernel {leans[n].default_kver} on the ESPs "
                       "while keeping room for Proxmox's next kernel: it keeps the "
                       "entries it has (free space on the ESPs, e.g. destroy an unused "
                       "BE, then run 'beadm sync')")
    return chosen, held


# -- prune's ESP floor -----------------------------------------------------------------
def usage(st: EspStore, names: list[str], claims: Claims) -> EspUsage:
    """One ESP for the retention policy: the loader's own files (``claims``) and every
    stored file (rounded to clusters) with the BEs whose entries name it. A file an entry
    of no BE names (Proxmox's, a stray one) is never counted as freed."""
    v = os.statvfs(st.root)
    free, cluster = free_space(st.root)
    files, refs = claims(st, names, cluster)
    for name in st.store_files():
        rel = f"{ent.STORE_DIR}/{name}"
        size = clusters((st.root / rel).stat().st_size, cluster)
        files.append((size, frozenset(refs.get(rel, set()))))
    return EspUsage(st.uuid, v.f_blocks * v.f_frsize, free, tuple(files))


def usages(esps: list[Esp], names: list[str], claims: Claims) -> tuple[EspUsage, ...] | None:
    """:func:`usage` of every mounted ESP; None when none could be measured (a missing
    ESP is left out: the others still count)."""
    out: list[EspUsage] = []
    for st in at_hand(esps):
        try:
            out.append(usage(st, names, claims))
        except OSError as exc:
            log.debug("ESP %s: cannot measure its space: %s", st.uuid, exc)
    return tuple(out) if out else None
