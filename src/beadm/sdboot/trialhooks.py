"""The trial hooks of the systemd-boot backend (``activate --trial``, ``beadm trial-boot``):
a counted entry, the fallback as default, the trial glob in ``LoaderEntryDefault``
(see :mod:`.trial` for the names and the glob)."""

from __future__ import annotations

import functools

from beadm import watchdog as wd
from beadm.backend import BeRef, Warnings
from beadm.errors import BootError
from beadm.esp import entries as ent
from beadm.esp import persist
from beadm.esp.backend import _container
from beadm.esp.efivars import DEFAULT, ONESHOT, SELECTED, EfiRefused
from beadm.esp.host import Session
from beadm.esp.notes import Notes
from beadm.esp.store import EspStore
from beadm.record import replace
from beadm.sdboot import trial
from beadm.sdboot.base import SdBase, _drop_counted


class TrialHooks(SdBase):
    """The trial hooks (see the module doc)."""

    def trials(self) -> bool:
        return True

    def trial_state(self, bes: list[BeRef]) -> trial.Trial | None:
        """The pending trial (its BE, tries left on each ESP), None when there is none."""
        efi = self.host.efivars
        base = trial.base_of_pattern(efi.get(DEFAULT)) if efi.available() else None
        if base is None:
            return None
        names = [b.name for b in bes]
        tries: dict[str, int] = {}
        with self.host.session() as s:
            for esp in s.esps():
                if esp.store is None:
                    continue
                for f in esp.store.beadm_entries():
                    n = ent.tries_left(f)
                    if n is not None and ent.strip_counter(f) == base:
                        tries[esp.uuid] = n
        be = self._be_of_id(base, names)
        if be is None or not tries:
            return None
        return trial.Trial(be=be, base=base, tries_left=tries)

    def booted_trial(self) -> bool:
        """Whether this boot came from a trial's counted entry (``LoaderEntrySelected``):
        its watchdog may be armed, also when the trial has been ended since."""
        efi = self.host.efivars
        selected = efi.get(SELECTED) if efi.available() else None
        return bool(selected) and str(selected).startswith(ent.PREFIX) and \
            trial.is_counted(str(selected))

    def activate_trial(self, be: BeRef, fallback: BeRef, tries: int,
                       watchdog: int = wd.DEFAULT) -> Warnings:
        """Boot ``be`` next with ``tries`` counted tries; ``fallback`` (the running BE)
        becomes the default that boots once they are spent. Order (a kill at any point
        leaves ``fallback`` or the trial booting next): entries, the counted entry,
        the fallback as default everywhere (EFI variable, loader.conf, record), then the
        trial glob in LoaderEntryDefault (the commit)."""
        notes = Notes()
        efi = self.host.efivars
        if not efi.available():
            raise BootError("activate --trial needs the EFI variable LoaderEntryDefault: "
                            "this system did not boot in UEFI mode")
        with self.host.session() as s:
            self._trial_units(s, be)
            plan = self._plan(s, be, notes, prepare=False)
            back = self._plan(s, fallback, notes, prepare=False)
            esps = s.esps()
            errors: list[str] = []
            plan = self._fit_one(esps, plan, notes)
            for p in (plan, back):
                self._each(esps, errors, "entries", functools.partial(self._install, plan=p))
            self._all_or_nothing(esps, errors, notes)
            kernel = next(k for k in plan.kernels if k.kver == plan.default_kver)
            counted = trial.counted_fname(plan.default_id, tries)

            def put(st: EspStore) -> None:
                _drop_counted(st)
                e = self._entry(st, plan, kernel)
                st.write_entry(counted, replace(e, options=trial.trial_options(e.options,
                                                                                watchdog)))

            self._each(esps, errors, "trial entry", put)
            if efi.get(ONESHOT) is not None:
                self._set_efi(ONESHOT, None, notes)
            self._assert_default(esps, errors, back.default_id, notes)
            self._set_record(_container(fallback), fallback.name)
            self._raise(esps, errors, notes)
            try:
                efi.set(DEFAULT, trial.pattern_for(plan.default_id))
            except EfiRefused as exc:
                self._each(esps, errors, "trial", _drop_counted)
                raise BootError(
                    f"activate --trial needs the EFI variable {DEFAULT}, and it could not be "
                    f"written ({exc.strerror}): {fallback.name} stays the default") from exc
            self._gc(esps, errors)
            self._raise(esps, errors, notes)
        return notes.done()

    def _trial_units(self, s: Session, be: BeRef) -> None:
        """BE ``be`` gets the units that settle its trial boot (and its watchdog) before
        anything else changes: without them no check would run and the loader would fall
        back silently after the tries (issue 23.7). Refused, nothing changed, when they
        cannot be written."""
        try:
            root = s.be_root(be, writable=True)
            persist.install_trial(root, dry_run=self._runner.dry_run, out=self._out)
        except OSError as exc:
            raise BootError(f"activate --trial: cannot install beadm's trial units into BE "
                            f"{be.name} ({exc}): nothing changed") from exc

    def end_trial(self, bes: list[BeRef]) -> Warnings:
        """Give up the pending trial: the recorded BE's entry is the default again (EFI
        variable and loader.conf), every counted entry goes, on every ESP."""
        notes = Notes()
        with self.host.session() as s:
            esps = s.esps()
            errors: list[str] = []
            record = self._get_record(_container(bes[0])) if bes else None
            rec = next((b for b in bes if b.name == record), None)
            if rec is not None:
                target = self._plan(s, rec, notes, prepare=False).default_id
                self._assert_default(esps, errors, target, notes)
            elif trial.base_of_pattern(self.host.efivars.get(DEFAULT)) is not None:
                self._set_efi(DEFAULT, None, notes)  # loader.conf decides, as before the trial
            self._each(esps, errors, "trial", _drop_counted)
            self._gc(esps, errors)
            self._raise(esps, errors, notes)
        return notes.done()
