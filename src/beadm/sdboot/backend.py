"""The systemd-boot backend: :class:`SystemdBootBackend` implements ``BootBackend``.

How the next boot is chosen and kept (see also ``docs`` in the package doc):

* **Record.** The activated BE is recorded as the ZFS user property ``org.beadm:next``
  on the BE root container (e.g. ``rpool/ROOT``): it survives ESP rewrites and ESP
  loss, and the hooks re-assert it with ``beadm sync``.
* **activate NAME.** The BE's entries are written on every ESP first; then the EFI
  variable ``LoaderEntryDefault`` is set to the exact id of its newest entry (exact, so
  loaders before v250 take it too and ``pve`` never matches ``pve-2``); then every
  ``loader.conf`` gets ``default <that id>``; then the record. If the firmware refuses
  the EFI write, a stale ``LoaderEntryDefault`` is deleted (it would outrank
  ``loader.conf``) and ``loader.conf`` alone carries the choice; Proxmox's tools may
  overwrite it, the ``zzz-beadm`` hooks re-assert it, and :meth:`boot_state` warns when
  it stands overwritten.
* **activate -t NAME.** ``LoaderEntryOneShot`` = the exact id of NAME's newest entry.
  The loader deletes the variable when it reads it, so the boot after (also after a
  failed boot) falls back to the default. There is no ``loader.conf`` fallback for -t:
  boot counting (``+1`` suffixes) only changes on the ESP that booted, the loader's ids
  include the counter and a glob default defeats it (lab.md), so a counted entry would
  leave the ESPs disagreeing and need a later cleanup that Proxmox's tools never do.
  When the firmware refuses the write, -t fails with a clear error and changes nothing.
"""

from __future__ import annotations

import functools
import logging

from beadm.backend import BeRef, Warnings
from beadm.errors import BootError
from beadm.esp import entries as ent
from beadm.esp import fallback
from beadm.esp.backend import _container
from beadm.esp.efivars import DEFAULT, ONESHOT, EfiRefused
from beadm.esp.host import Esp
from beadm.esp.kernels import version_key
from beadm.esp.notes import Notes
from beadm.esp.plan import Plan
from beadm.esp.store import EspStore
from beadm.record import record
from beadm.sdboot.base import _drop_counted, _ids_of
from beadm.sdboot.bootstate import BootStateHook
from beadm.sdboot.check import CheckHook
from beadm.sdboot.migrate import MigrateHook
from beadm.sdboot.trialhooks import TrialHooks

log = logging.getLogger(__name__)
PROXMOX_DEFAULT = "proxmox-*"


class SystemdBootBackend(TrialHooks, MigrateHook, CheckHook, BootStateHook):
    """BEs booted by systemd-boot from every ESP in ``/etc/kernel/proxmox-boot-uuids``."""

    name = "systemd-boot"

    def init(self, be: BeRef) -> Warnings:
        return self._make_bootable(be)

    def post_create(self, be: BeRef) -> Warnings:
        return self._make_bootable(be)

    def _make_bootable(self, be: BeRef, *, replacing: BeRef | None = None) -> Warnings:
        notes = Notes()
        if self._runner.dry_run and not self._exists(be.dataset):
            # A dry run did not create (or rename) the dataset: there is nothing to read
            # or mount, only to say what would be done with it (issue 10.5).
            print(f"would write {be.dataset}'s /etc/kernel/cmdline (root=ZFS={be.dataset}), "
                  "its zzz-beadm hooks and the running BE's ESP list (where it differs), "
                  "and boot entries for the kernels in its /boot on every ESP", file=self._out)
            if replacing is not None:
                print(f"would move every default naming BE {replacing.name} to BE {be.name} "
                      f"and remove {replacing.name}'s boot entries", file=self._out)
            return ()
        with self.host.session() as s:
            plan, esps = self._staged(s, be, notes, prepare=True)
            errors: list[str] = []
            old = replacing.name if replacing else None
            self._each(esps, errors, "entries", lambda st: self._install(st, plan, replacing=old))
            if replacing is not None:
                self._follow_rename(esps, errors, replacing, plan, notes)
            self._each(esps, errors, "prune",
                       lambda st: self._prune(st, be.name, plan.fnames()))
            self._gc(esps, errors)
            self._raise(esps, errors, notes)
            # after the defaults moved to the new name: those are what a refresh must not undo
            fallback = _Fallback.of(esps, replacing) if replacing is not None else None
        if fallback is not None:
            self._revive_fallback(fallback, notes)
        return notes.done()

    def activate(self, be: BeRef, *, temporary: bool) -> Warnings:
        notes = Notes()
        with self.host.session() as s:
            plan, esps = self._staged(s, be, notes, prepare=False)
            errors: list[str] = []
            self._each(esps, errors, "entries", lambda st: self._install(st, plan))
            self._all_or_nothing(esps, errors, notes)  # no default changes before
            if temporary:
                efi = self.host.efivars
                try:
                    efi.set(ONESHOT, plan.default_id)
                except EfiRefused as exc:
                    raise BootError(
                        f"activate -t needs the EFI variable {ONESHOT}, and it could not be "
                        f"written ({exc.strerror}); use 'activate' without -t") from exc
            else:
                if self.host.efivars.get(ONESHOT) is not None:
                    self._set_efi(ONESHOT, None, notes)  # a pending once-boot is overridden
                self._assert_default(esps, errors, plan.default_id, notes)
                self._set_record(_container(be), be.name, ask=False)
                self._each(esps, errors, "trial", _drop_counted)  # any trial ends here
            self._gc(esps, errors)
            self._raise(esps, errors, notes)
        return notes.done()

    def preflight(self) -> None:
        """Nothing to refuse here: ``--backend systemd-boot`` is the admin's own choice
        (``auto`` wraps this backend in :class:`beadm.detect.GuardedBackend`)."""

    def post_rename(self, old: BeRef, new: BeRef) -> Warnings:
        """Also the undo of a failed rename (called with old and new swapped)."""
        return self._make_bootable(new, replacing=old)

    def _follow_rename(self, esps: list[Esp], errors: list[str], old: BeRef,
                       plan: Plan, notes: Notes) -> None:
        """Point every default that named ``old`` at ``plan``'s BE, then drop old's entries."""
        olds = _ids_of(esps, old.name)
        efi = self.host.efivars
        for var in (ONESHOT, DEFAULT):
            cur = efi.get(var) if efi.available() else None
            if cur and cur.lower() in olds:
                self._set_efi(var, plan.default_id, notes)
        for esp in esps:
            st = esp.store
            d = st.loader_default() if st else None
            if d and d.lower() in olds:
                self._each([esp], errors, "loader.conf",
                           functools.partial(EspStore.set_loader_default,
                                             pattern=plan.default_id))
        if self._get_record(_container(old)) == old.name:
            self._set_record(_container(old), plan.be.name)
        self._each(esps, errors, "prune",
                   lambda st: self._prune(st, old.name, []))

    def post_destroy(self, be: BeRef) -> Warnings:
        notes = Notes()
        self._forget(be)
        with self.host.session() as s:
            esps = s.esps()
            errors: list[str] = []
            mine = _ids_of(esps, be.name)  # exact ids: "test" never touches "test-2"
            efi = self.host.efivars
            for var in (ONESHOT, DEFAULT):
                cur = efi.get(var) if efi.available() else None
                if cur and cur.lower() in mine:
                    self._set_efi(var, None, notes)

            def drop(st: EspStore) -> None:
                d = st.loader_default()
                if d and d.lower() in mine:
                    st.set_loader_default(PROXMOX_DEFAULT)
                self._prune(st, be.name, [])

            self._each(esps, errors, "remove entries", drop)
            self._gc(esps, errors)
            self._raise(esps, errors, notes)
            # after drop(): no default named the gone BE's entries any more
            fallback = _Fallback.of(esps, be)
        self._revive_fallback(fallback, notes)
        return notes.done()

    def _revive_fallback(self, fb: _Fallback, notes: Notes) -> None:
        """Proxmox's own entries (``proxmox-<kver>.conf``, the fallback when no beadm
        default holds: NVRAM reset, ``reinit``) carry the ``root=`` of whichever BE ran
        ``proxmox-boot-tool refresh`` last. When that BE is gone (destroyed, renamed), run
        the refresh from the running BE, whose cmdline beadm keeps right, so that they
        boot an existing BE again; then put back the ``default`` lines the refresh reset.
        A refresh that fails (a full ESP) is a warning: the destroy or rename stands."""
        if not fb.dead:
            return
        note = (f"Proxmox's proxmox-*.conf entries on ESP {', '.join(fb.dead)} boot "
                f"{fb.gone}, which is gone")
        if not fallback.refresh(self._runner, self.host, note, notes):
            return  # a dry run: nothing was refreshed, nothing to put back
        with self.host.session() as s:
            errors: list[str] = []
            for esp in s.esps():
                want = fb.defaults.get(esp.uuid)
                st = esp.store
                if st is not None and want and st.loader_default() != want:
                    self._each([esp], errors, "loader.conf",
                               functools.partial(EspStore.set_loader_default, pattern=want))
            self._raise(s.esps(), errors, notes)

    def sync(self, bes: list[BeRef], *, only_if_used: bool = False) -> Warnings:
        notes = Notes()
        with self.host.session() as s:
            if only_if_used and not any(e.store and e.store.beadm_entries() for e in s.esps()):
                log.debug("sync: no ESP has a beadm entry yet (no init): nothing to do")
                return ()
            errors: list[str] = []
            plans = self._sync_plans(s, bes, errors, notes)
            esps = s.esps()
            names = [b.name for b in bes]
            plans, held = self._fit_all(esps, plans, bes, notes)
            for why in held.values():  # the CLI prints the warnings: not the log too
                notes.add(why)
            for plan in plans.values():
                self._each(esps, errors, "entries", functools.partial(self._install, plan=plan))
            record = self._get_record(_container(bes[0])) if bes else None
            base = self._pending_trial(esps)
            target = plans[record].default_id if record in plans else \
                _held_default(esps, record) if record in held else None
            if target is not None and base is not None:
                # a trial is pending: keep LoaderEntryDefault (its glob), re-assert the
                # fallback in loader.conf only
                self._each(esps, errors, "loader.conf",
                           lambda st: st.set_loader_default(target))
            elif target is not None:
                self._assert_default(esps, errors, target, notes)
            self._each(esps, errors, "prune", functools.partial(_prune_all, plans=plans,
                                                                  names=names, trial=base))
            self._gc(esps, errors)
            self._raise(esps, errors, notes)
        return notes.done()


def _held_default(esps: list[Esp], name: str) -> str | None:
    """The entry of BE ``name`` with the newest kernel on the ESPs (a held BE's default)."""
    found = {fname: e.version or "" for esp in esps if esp.store is not None
             for fname, e in esp.store.beadm_entries().items() if e.be == name}
    if not found:
        return None
    return max(found, key=lambda f: version_key(found[f]))


@record
class _Fallback:
    """Read before a BE goes: the ESPs whose ``proxmox-*.conf`` entries boot it (``dead``)
    and every ESP's ``default`` line, to be put back after a refresh."""

    gone: str
    dead: tuple[str, ...]
    defaults: dict[str, str | None]

    @staticmethod
    def of(esps: list[Esp], be: BeRef) -> _Fallback:
        stores = [e.store for e in esps if e.store is not None]
        return _Fallback(
            be.dataset,
            tuple(st.uuid for st in stores if be.dataset in _fallback_roots(st)),
            {st.uuid: st.loader_default() for st in stores},
        )


def _fallback_roots(st: EspStore) -> set[str]:
    """The datasets that Proxmox's own ``proxmox-*.conf`` entries on ``st`` boot."""
    roots = set()
    for fname, e in st.entry_files().items():
        if fname.startswith("proxmox-"):
            for word in e.options.split():
                if word.startswith("root=ZFS="):
                    roots.add(word[len("root=ZFS="):])
    return roots


def _prune_all(st: EspStore, *, plans: dict[str, Plan], names: list[str],
               trial: str | None = None) -> None:
    """Remove entries of BEs that no longer exist and of kernels their BE no longer has,
    and counted entries of trials that ended; the pending trial's counted entry stays as
    the loader left it (its counter changes only on the ESP that booted)."""
    for fname, e in st.beadm_entries().items():
        owner = e.be or ent.be_of_id(fname, names)
        counted = ent.tries_left(fname) is not None
        if counted:
            if ent.strip_counter(fname) != trial or owner not in names:
                st.remove_entry(fname)
        elif owner not in names or (owner in plans and fname not in plans[owner].fnames()):
            st.remove_entry(fname)
