"""The systemd-boot backend's building blocks, shared by its hooks (:mod:`.backend`,
:mod:`.check`, :mod:`.bootstate`, :mod:`.migrate`, :mod:`.trialhooks`): an ESP's entries,
the defaults (EFI variables and ``loader.conf``), the room its layout takes, the BE an
entry id names, the pending trial."""

from __future__ import annotations

import logging
from pathlib import Path

from beadm.backend import BeRef
from beadm.errors import BeadmError, BootError
from beadm.esp import entries as ent
from beadm.esp import kernels, room
from beadm.esp.backend import _container
from beadm.esp.drift import EspDrift
from beadm.esp.efivars import DEFAULT, EfiRefused
from beadm.esp.host import Esp
from beadm.esp.notes import Notes
from beadm.esp.plan import Plan
from beadm.esp.store import EspStore, content_name
from beadm.sdboot import trial

log = logging.getLogger(__name__)


class SdBase(EspDrift):
    """What every systemd-boot hook builds on (see the module doc)."""

    name = "systemd-boot"

    def _entry(self, esp: EspStore, plan: Plan, k: kernels.Kernel) -> ent.Entry:
        linux = esp.put_file(k.vmlinuz, f"vmlinuz-{k.kver}")
        initrd = esp.put_file(k.initrd, f"initrd.img-{k.kver}")
        return ent.Entry(
            title=ent.title_for(plan.be.name, plan.be.description, k.kver),
            version=k.kver, options=plan.options, linux=linux, initrd=(initrd,),
            be=plan.be.name)

    def _install(self, esp: EspStore, plan: Plan, *, replacing: str | None = None) -> None:
        """Files first, then the entries naming them (stale entries stay until pruned)."""
        existing = esp.beadm_entries()
        for k in plan.kernels:
            fname = ent.entry_filename(plan.be.name, k.kver)
            other = existing.get(fname)
            if other and other.be and other.be not in (plan.be.name, replacing):
                raise BootError(
                    f"BE names {other.be!r} and {plan.be.name!r} differ only in case: "
                    "systemd-boot lowercases entry ids and cannot tell them apart")
            esp.write_entry(fname, self._entry(esp, plan, k))

    def _fit_all(self, esps: list[Esp], plans: dict[str, Plan], bes: list[BeRef],
                 notes: Notes) -> tuple[dict[str, Plan], dict[str, str]]:
        """What ``sync`` may store on the ESPs, ``check`` compares with the same
        (:func:`beadm.esp.room.fit_all`): BEs lean, or held as they are (with why)."""
        return room.fit_all(
            esps, plans, notes, headroom=self._headroom,
            entries=lambda st: len(st.beadm_entries()),
            named=lambda names: _held_files(esps, names),
            record=lambda: self._get_record(_container(bes[0])) if bes else None)

    def _rename_need(self, st: EspStore, old: BeRef, new: BeRef,
                     cluster: int) -> tuple[int, str]:
        """One FAT cluster for each of ``new``'s entries, plus one for the temporary file
        a write goes through."""
        count = sum(1 for e in st.beadm_entries().values() if e.be == old.name)
        need = (count + 1) * cluster
        return need, f"the entries of {new.name} need {need}"

    def _claims(self, st: EspStore, names: list[str],
                cluster: int) -> tuple[list[tuple[int, frozenset[str]]], dict[str, set[str]]]:
        """Every beadm entry (a cluster, its BE alone); per stored file the BEs whose
        entries name it (an entry of no BE: ``(entry NAME)``, which never goes)."""
        refs: dict[str, set[str]] = {}
        files: list[tuple[int, frozenset[str]]] = []
        for fname, e in st.entry_files().items():
            ours = fname.startswith(ent.PREFIX)
            owner = (e.be or ent.be_of_id(fname, names) or "") if ours else ""
            owner = owner if owner in names else f"(entry {fname})"
            if ours:
                files.append((cluster, frozenset({owner})))
            for path in e.store_paths():
                refs.setdefault(path, set()).add(owner)
        return files, refs

    def _prune(self, esp: EspStore, name: str, keep: list[str]) -> None:
        """Remove BE ``name``'s entries (by their BE tag, never by name patterns) not in keep."""
        for fname, e in esp.beadm_entries().items():
            if fname not in keep and ent.strip_counter(fname) not in keep and e.be == name:
                esp.remove_entry(fname)

    def _set_efi(self, var: str, value: str | None, notes: Notes) -> bool:
        """Set (or with None delete) a loader variable; False when refused."""
        efi = self.host.efivars
        try:
            if value is None:
                efi.delete(var)
            elif efi.get(var) != value:
                efi.set(var, value)
        except EfiRefused as exc:
            note = (f"EFI variable {var} not written ({exc.strerror}): "
                    "loader.conf carries the choice")
            notes.add(note)  # the CLI prints it: not the log too
            return False
        return True

    def _assert_default(self, esps: list[Esp], errors: list[str], target: str,
                        notes: Notes) -> None:
        """The default last: EFI variable (or its removal if refused), then loader.conf."""
        if self.host.efivars.available() and not self._set_efi(DEFAULT, target, notes):
            current = self.host.efivars.get(DEFAULT)
            if current is not None and current != target and \
                    not self._set_efi(DEFAULT, None, notes):
                errors.append(f"EFI variable {DEFAULT}={current} can be neither changed nor "
                              "removed and outranks loader.conf")
        self._each(esps, errors, "loader.conf", lambda st: st.set_loader_default(target))

    def _gc(self, esps: list[Esp], errors: list[str]) -> None:
        self._each(esps, errors, "garbage collection", lambda st: st.gc())

    def _be_of_id(self, eid: str, names: list[str]) -> str | None:
        """The BE whose entry id ``eid`` is (an EFI variable's value). From the id alone
        unless BE names differ only in case: then the entry's ``# beadm-be`` tag decides
        (``T`` on the wrong BE would let ``destroy`` remove the BE that boots once)."""
        found = ent.bes_of_id(eid, names)
        if len(found) < 2:
            return found[0] if found else None
        want = ent.strip_counter(eid.lower())
        try:
            with self.host.session() as s:
                for esp in s.esps():
                    if esp.store is None:
                        continue
                    for fname, e in esp.store.beadm_entries().items():
                        if ent.strip_counter(fname.lower()) == want and e.be in found:
                            return e.be
        except BeadmError as exc:
            log.debug("cannot read the ESPs for entry %s: %s", eid, exc)
        return found[0]

    def _pending_trial(self, esps: list[Esp]) -> str | None:
        """The plain entry name of the pending trial: LoaderEntryDefault is a trial glob
        and some ESP at hand still holds its counted entry (any tries left)."""
        efi = self.host.efivars
        base = trial.base_of_pattern(efi.get(DEFAULT)) if efi.available() else None
        if base is None:
            return None
        for esp in esps:
            if esp.store is not None and any(
                    ent.strip_counter(f) == base and ent.tries_left(f) is not None
                    for f in esp.store.beadm_entries()):
                return base
        return None


def _drop_counted(st: EspStore) -> None:
    """Remove every counted beadm entry (a trial's) from one ESP."""
    for fname in st.beadm_entries():
        if ent.tries_left(fname) is not None:
            st.remove_entry(fname)


def _ids_of(esps: list[Esp], name: str) -> set[str]:
    """Ids of BE ``name``'s entries on any mounted ESP (by the entries' BE tag)."""
    return {fname for esp in esps if esp.store is not None
            for fname, e in esp.store.beadm_entries().items() if e.be == name}


def _held_files(esps: list[Esp], names: list[str]) -> dict[str, set[str]]:
    """Per ESP: the stored files that the entries of BEs ``names`` name now."""
    out: dict[str, set[str]] = {}
    for esp in esps:
        if esp.store is None:
            continue
        out[esp.uuid] = {p.rsplit("/", 1)[-1] for e in esp.store.beadm_entries().values()
                         if e.be in names for p in e.store_paths()}
    return out


def _sname(path: Path, basename: str, st: EspStore) -> str:
    return content_name(path, basename, (st,))
