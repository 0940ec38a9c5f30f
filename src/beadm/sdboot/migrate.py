"""``migrate`` of the systemd-boot backend: the old shell beadm's layout (``env/<be>/``
copies of kernels, entries ``<be>-<kver>.conf`` naming them) to the shared store."""

from __future__ import annotations

import fnmatch
import functools

from beadm.backend import BeRef, Warnings
from beadm.esp import entries as ent
from beadm.esp.backend import _container
from beadm.esp.efivars import DEFAULT, ONESHOT
from beadm.esp.kernels import version_key
from beadm.esp.notes import Notes
from beadm.esp.store import EspStore
from beadm.sdboot.base import SdBase


class MigrateHook(SdBase):
    """``migrate`` (see the module doc)."""

    def migrate(self, bes: list[BeRef]) -> Warnings:
        """Convert the old shell beadm's layout (``env/<be>/`` copies of kernels and entries
        ``<be>-<kver>.conf`` naming them) to the shared store; free the old copies.

        Each old BE that still exists gets its beadm entries (from its own /boot, as always);
        a default (EFI variable or loader.conf) that chose an old entry is moved to the BE's
        new entry and recorded; then the old entries go, then their ``env/<be>/`` folders.
        """
        notes = Notes()
        by_name = {b.name: b for b in bes}
        with self.host.session() as s:
            esps = s.esps()
            errors: list[str] = []
            old: dict[str, dict[str, str]] = {}  # ESP uuid -> old entry file -> BE name
            for esp in esps:
                if esp.store is not None:
                    old[esp.uuid] = old_entries(esp.store)
            found = {be for per in old.values() for be in per.values()}
            plans = {n: self._plan(s, by_name[n], notes, prepare=False) for n in sorted(found)
                     if n in by_name}
            for plan in plans.values():
                self._each(esps, errors, "entries", functools.partial(self._install, plan=plan))
            chosen: str | None = None
            efi = self.host.efivars
            for var in (ONESHOT, DEFAULT):
                cur = efi.get(var) if efi.available() else None
                owner = _old_owner(cur, old) if cur else None
                if owner in plans:
                    self._set_efi(var, plans[owner].default_id, notes)
                    chosen = owner if var == DEFAULT else chosen
            for esp in esps:
                st = esp.store
                if st is None:
                    continue
                d = st.loader_default()
                owner = _old_owner(d, {esp.uuid: old.get(esp.uuid, {})}) if d else None
                if owner in plans:
                    target = plans[owner].default_id
                    self._each([esp], errors, "loader.conf",
                               functools.partial(EspStore.set_loader_default, pattern=target))
                    chosen = chosen or owner
            if chosen is not None and self._get_record(_container(by_name[chosen])) is None:
                self._set_record(_container(by_name[chosen]), chosen)

            def drop_old(st: EspStore) -> None:
                for fname, be in old.get(st.uuid, {}).items():
                    if be in plans:
                        st.remove_entry(fname)
                for be in plans:
                    st.remove_tree(f"env/{be}")

            self._each(esps, errors, "remove old copies", drop_old)
            self._gc(esps, errors)
            self._raise(esps, errors, notes)
        return notes.done()


def old_entries(st: EspStore) -> dict[str, str]:
    """The old shell beadm's entries on an ESP: file name -> BE name (from ``/env/<be>/``)."""
    out: dict[str, str] = {}
    for fname, e in st.entry_files().items():
        if fname.startswith((ent.PREFIX, "proxmox-", "auto-")):
            continue
        parts = e.linux.lstrip("/").split("/")
        if len(parts) == 3 and parts[0] == "env":
            out[fname] = parts[1]
    return out


def _old_owner(pattern: str | None, old: dict[str, dict[str, str]]) -> str | None:
    """The old BE whose entry a default pattern selects (exact id or glob), as the loader
    picks: the first matching id in its order (ids descending, natural order), so the old
    port's ``default test-*`` selects ``test-6.1.conf`` over ``test-2-6.1.conf``."""
    if not pattern:
        return None
    low = pattern.lower()
    for per in old.values():
        for fname in sorted(per, key=lambda f: version_key(f.lower()), reverse=True):
            eid = fname.lower()
            if fnmatch.fnmatchcase(eid, low) or fnmatch.fnmatchcase(eid[:-5], low):
                return per[fname]
    return None
