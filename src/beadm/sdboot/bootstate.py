"""``boot_state`` of the systemd-boot backend: which BE boots next (R) and once (T), read
from the EFI variables and, where they do not decide, from every ESP's ``loader.conf``
(:mod:`.resolve` picks the entry as systemd-boot does)."""

from __future__ import annotations

from beadm.backend import BeRef, BootState
from beadm.errors import BeadmError
from beadm.esp import entries as ent
from beadm.esp.backend import _container
from beadm.esp.efivars import DEFAULT, ONESHOT
from beadm.esp.host import at_hand
from beadm.record import replace
from beadm.sdboot import resolve, trial
from beadm.sdboot.base import SdBase


class BootStateHook(SdBase):
    """``boot_state`` (see the module doc)."""

    def boot_state(self, bes: list[BeRef]) -> BootState:
        state = self._boot_state(bes)
        return replace(state, pins=self._running_pins(bes))

    def _boot_state(self, bes: list[BeRef]) -> BootState:
        names = [b.name for b in bes]
        efi = self.host.efivars
        oneshot = efi.get(ONESHOT) if efi.available() else None
        default = efi.get(DEFAULT) if efi.available() else None
        once = self._be_of_id(oneshot, names) if oneshot else None
        base = trial.base_of_pattern(default)
        trial_be = self._be_of_id(base, names) if base else None
        tries: list[int] = []
        if base is not None:
            default = None  # a trial: T; loader.conf (the fallback) decides R
        if default and default != "@saved":
            nxt = self._be_of_id(default, names)
            if nxt is not None:
                return BootState(next_boot=nxt, once=once)
        # LoaderEntryDefault does not decide: read loader.conf (the ESPs must be mounted)
        warnings: list[str] = []
        by_ds = {b.dataset: b.name for b in bes}
        picks: dict[str, str | None] = {}
        once_pick: str | None = None
        try:
            with self.host.session() as s:
                for st in at_hand(s.esps(), warnings):
                    found = st.entry_files()
                    tries += [n for f in found if ent.strip_counter(f.lower()) == base
                              and (n := ent.tries_left(f)) is not None]
                    eid = resolve.pick(st.root, found, oneshot=None, efi_default=default,
                                       conf_default=st.loader_default())
                    picks[st.uuid] = self._owner(eid, found, by_ds, names)
                    if oneshot and once is None:
                        oid = resolve.pick(st.root, found, oneshot=oneshot, efi_default=None,
                                           conf_default=None)
                        once_pick = self._owner(oid, found, by_ds, names)
        except BeadmError as exc:  # list must still work (the BE library falls back to bootfs)
            return BootState(once=once, warnings=(f"cannot read the ESPs: {exc}",))
        values = [v for v in picks.values()]
        nxt = values[0] if values else None
        if len(set(values)) > 1:
            warnings.append("ESPs disagree on the next boot: " + ", ".join(
                f"{u}: {v or '?'}" for u, v in picks.items()) + " (run 'beadm sync')")
        record = self._get_record(_container(bes[0])) if bes else None
        if record is not None and record in names and nxt != record:
            warnings.append(
                f"beadm activated {record}, but loader.conf now boots {nxt or 'no BE'} "
                "(overwritten by proxmox-boot-tool?): run 'beadm activate "
                f"{record}' or 'beadm sync'")
        if trial_be is not None and not any(tries):
            trial_be = None  # no try left anywhere: the loader boots the fallback
        return BootState(next_boot=nxt, once=once or once_pick or trial_be,
                         warnings=tuple(warnings), trial=trial_be,
                         trial_tries=max(tries) if trial_be is not None else None)

    @staticmethod
    def _owner(eid: str | None, found: dict[str, ent.Entry], by_ds: dict[str, str],
               names: list[str]) -> str | None:
        if eid is None:
            return None
        e = next((v for k, v in found.items() if k.lower() == eid), None)
        if e is not None:
            ds = e.root_dataset()
            if ds in by_ds:
                return by_ds[ds]
        return ent.be_of_id(eid, names)
