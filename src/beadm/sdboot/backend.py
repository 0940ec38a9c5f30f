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

import fnmatch
import functools
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from beadm import watchdog as wd
from beadm.backend import BeRef, BootState, Checked, EspUsage, KernelPin, Warnings
from beadm.errors import BeadmError, BootError
from beadm.esp import cmdline as cmd
from beadm.esp import entries as ent
from beadm.esp import esplist, kernels, persist
from beadm.esp.backend import EspBackend, Plan, _container
from beadm.esp.efivars import DEFAULT, ONESHOT, SELECTED, EfiRefused
from beadm.esp.host import Esp, Session
from beadm.esp.kernels import version_key
from beadm.esp.notes import Notes
from beadm.esp.store import EspStore, content_name
from beadm.record import record, replace
from beadm.sdboot import resolve, trial

log = logging.getLogger(__name__)
PROXMOX_DEFAULT = "proxmox-*"


class SystemdBootBackend(EspBackend):
    """BEs booted by systemd-boot from every ESP in ``/etc/kernel/proxmox-boot-uuids``."""

    name = "systemd-boot"

    # -- building blocks -----------------------------------------------------------
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

    def _room_problems(self, esps: list[Esp], plan: Plan) -> list[str]:
        """Why the ESPs at hand cannot take ``plan``'s kernel files that they do not hold
        yet and still keep room for Proxmox's next kernel (as large as the largest pair it
        keeps in EFI/proxmox/); empty when they can."""
        problems = []
        for esp in esps:
            st = esp.store
            if st is None:
                continue
            try:
                # Every file stored already (the usual activate, a create from the running
                # BE): nothing to fit, and no statvfs, which on FAT counts the free clusters
                # of the whole FAT the first time after a mount (~0.2 s an ESP under
                # emulation, issue 15). Names are cached: asking again with clusters is cheap.
                if not st.bytes_to_add(plan.files(), 1):
                    continue
                free, cluster = _free_space(st.root)
                need = st.bytes_to_add(plan.files(), cluster)
                headroom = st.proxmox_pair_bytes()
            except OSError as exc:
                problems.append(f"ESP {esp.uuid}: {exc.strerror or exc}")
                continue
            if need and free - need < headroom:
                problems.append(
                    f"ESP {esp.uuid} has {_mib(free)} free; BE {plan.be.name}'s kernels need "
                    f"{_mib(need)} and Proxmox's next kernel {_mib(headroom)}")
        return problems

    def _fit_one(self, esps: list[Esp], plan: Plan, notes: Notes) -> Plan:
        """Before any ESP is written: ``plan`` if every ESP takes it with room to spare for
        Proxmox's next kernel, else its lean form (only the kernel the BE boots) if that
        fits, else nothing is written anywhere: a kernel update must never fail for lack of
        the space beadm took."""
        problems = self._room_problems(esps, plan)
        if not problems:
            return plan
        lean = plan.lean()
        if lean.kernels != plan.kernels and not self._room_problems(esps, lean):
            self._note_lean([plan.be.name], notes)
            return lean
        raise BootError("not enough room on the ESPs, nothing written: "
                        + "; ".join(problems)
                        + " (destroy an unused BE, or remove old kernels, then retry)")

    def _fit_all(self, esps: list[Esp], plans: dict[str, Plan], bes: list[BeRef],
                 notes: Notes) -> tuple[dict[str, Plan], dict[str, str]]:
        """What ``sync`` may store on the ESPs (``check`` compares with the same): every BE's
        plan when, with them, every ESP keeps room for Proxmox's next kernel; else every BE
        lean; else BEs one by one (the running BE, the activated one, then by name), each
        lean if it fits and else held: it keeps the entries it has (returned with why).

        Decided from the ESPs' totals (free + beadm's own files), not from what is stored
        now, so that repeated syncs agree with each other and with ``check``."""
        rooms = _rooms(esps)
        if not rooms or not plans:
            return plans, {}
        if _fits(rooms, plans.values()):
            return plans, {}
        leans = {n: p.lean() for n, p in plans.items()}
        if _fits(rooms, leans.values()):
            trimmed = sorted(n for n in plans if leans[n].kernels != plans[n].kernels)
            if trimmed:
                self._note_lean(trimmed, notes)
            return leans, {}
        record = self._get_record(_container(bes[0])) if bes else None
        order = sorted(plans, key=lambda n: (not plans[n].be.running, n != record, n))
        chosen: dict[str, Plan] = {}
        held: dict[str, str] = {}
        for n in order:
            rest = [x for x in order if x not in chosen and x != n]
            kept = _held_files(esps, rest)
            # a BE whose files every ESP stores already takes no room: holding it would free
            # nothing, and naming it as lacking room would send the admin the wrong way
            if _stored_everywhere(rooms, leans[n]) or \
                    _fits(rooms, [*chosen.values(), leans[n]], kept):
                chosen[n] = leans[n]
            else:
                held[n] = (f"BE {n}: no room for kernel {leans[n].default_kver} on the ESPs "
                           "while keeping room for Proxmox's next kernel: it keeps the "
                           "entries it has (free space on the ESPs, e.g. destroy an unused "
                           "BE, then run 'beadm sync')")
        return chosen, held

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

    # -- the protocol --------------------------------------------------------------
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
            plan = self._plan(s, be, notes, prepare=True)
            esps = s.esps()
            errors: list[str] = []
            old = replacing.name if replacing else None
            plan = self._fit_one(esps, plan, notes)
            self._carry_esp_list(s, be, notes)
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

    def trials(self) -> bool:
        return True

    def activate(self, be: BeRef, *, temporary: bool) -> Warnings:
        notes = Notes()
        with self.host.session() as s:
            plan = self._plan(s, be, notes, prepare=False)
            esps = s.esps()
            errors: list[str] = []
            plan = self._fit_one(esps, plan, notes)
            self._carry_esp_list(s, be, notes)  # booted, it must sync the ESPs this BE syncs
            self._each(esps, errors, "entries", lambda st: self._install(st, plan))
            broken = [e for e in esps if e.store is None and not e.missing]
            if errors or broken or not any(e.store for e in esps):
                # a present ESP that cannot take the entries: change no default anywhere
                self._raise(esps, errors, notes)
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

    def check_rename(self, old: BeRef, new: BeRef) -> None:
        """Before any change: every ESP at hand has room for ``new``'s entries (one FAT
        cluster each, plus one for the temporary file a write goes through), so a full
        ESP refuses the rename instead of failing it half-way."""
        with self.host.session() as s:
            problems: list[str] = []
            for esp in s.esps():
                st = esp.store
                if st is None:
                    continue
                count = sum(1 for e in st.beadm_entries().values() if e.be == old.name)
                try:
                    free, cluster = _free_space(st.root)
                except OSError as exc:
                    problems.append(f"ESP {esp.uuid}: {exc.strerror}")
                    continue
                need = (count + 1) * cluster
                if free < need:
                    problems.append(f"ESP {esp.uuid} has {free} bytes free, the entries of "
                                    f"{new.name} need {need}")
            if problems:
                raise BootError("not renaming: " + "; ".join(problems))

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
        if self._get_record(_container(be)) == be.name:
            self._set_record(_container(be), None)
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
        if self._runner.dry_run:
            self._runner.run(["proxmox-boot-tool", "refresh"])
            return
        self.host.release()  # the refresh mounts the ESPs itself, in the host's namespace
        log.warning("%s: running proxmox-boot-tool refresh from the running BE", note)
        try:
            self._runner.run(["proxmox-boot-tool", "refresh"])
        except BeadmError as exc:
            notes.add(f"{note}; 'proxmox-boot-tool refresh' failed ({exc}): "
                                 "run it yourself once the cause is fixed")
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
            plans: dict[str, Plan] = {}
            for be in bes:
                try:
                    plan = self._plan(s, be, notes, prepare=False)
                    if cmd.first_line(s.be_root(be, writable=False)) \
                            != plan.options:  # the drift check reports: repair it
                        plan = self._plan(s, be, notes, prepare=True)
                    plans[be.name] = plan
                    self._carry_esp_list(s, be, notes)  # the drift check reports: repair it
                except BootError as exc:
                    errors.append(exc.message)
                except OSError as exc:
                    errors.append(f"BE {be.name}: cannot write its /etc/kernel/cmdline: {exc}")
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
                    old[esp.uuid] = _old_entries(esp.store)
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

    def esp_usage(self, bes: list[BeRef]) -> tuple[EspUsage, ...] | None:
        """Per mounted ESP: its size, free space and beadm's files with the BEs whose
        entries need them (``prune``'s ESP floor). None when no ESP could be measured
        (a missing ESP is left out: the others still count)."""
        names = [b.name for b in bes]
        out: list[EspUsage] = []
        with self.host.session() as s:
            for esp in s.esps():
                if esp.store is None:
                    continue
                try:
                    out.append(_usage(esp.store, names))
                except OSError as exc:
                    log.debug("ESP %s: cannot measure its space: %s", esp.uuid, exc)
        return tuple(out) if out else None

    def check(self, bes: list[BeRef]) -> Checked:
        problems: list[str] = []
        facts: list[object] = []  # the kernel pins, a pending trial
        notes = Notes()  # what a changing hook would warn of (a tight ESP, ...)
        with self.host.session() as s:
            plans: dict[str, Plan] = {}
            for be in bes:
                try:
                    plan = self._plan(s, be, notes, prepare=False)
                except BootError as exc:
                    problems.append(exc.message)
                    continue
                plans[be.name] = plan
                pin = kernels.pin_of(s.be_root(be, writable=False))
                if pin is not None:
                    facts.append(KernelPin(be.name, pin.kver, pin.once,
                                                plan.pin is not None).describe())
                current = cmd.first_line(s.be_root(be, writable=False))
                if current != plan.options:
                    problems.append(f"BE {be.name}: /etc/kernel/cmdline is {current!r}, "
                                    f"should be {plan.options!r}")
                try:
                    want, drift = self._esp_list_drift(s, be)
                except BootError as exc:
                    problems.append(exc.message)
                    continue
                if want is not None:
                    problems += [esplist.describe(be.name, d, want,
                                                  d.would_drop(want, self.host.esp_present))
                                 for d in drift]
            esps = s.esps()
            names = [b.name for b in bes]
            record = self._get_record(_container(bes[0])) if bes else None
            full = dict(plans)
            plans, held = self._fit_all(esps, plans, bes, notes)
            problems += held.values()
            base = self._pending_trial(esps)
            for esp in esps:
                if esp.store is None:
                    problems.append(esp.error or f"ESP {esp.uuid} is missing")
                    continue
                problems += self._check_esp(esp.store, plans, names, record, full,
                                            trial=base)
            if base is not None:
                facts.append(f"a trial boot of {self._be_of_id(base, names)} is pending "
                                  f"(LoaderEntryDefault={self.host.efivars.get(DEFAULT)})")
            if record in plans and self.host.efivars.available() and base is None:
                cur = self.host.efivars.get(DEFAULT)
                if cur is not None and cur != plans[record].default_id:
                    problems.append(f"EFI {DEFAULT} is {cur}, beadm activated {record}")
        return Checked(tuple(problems), (*facts, *notes))

    def _check_esp(self, st: EspStore, plans: dict[str, Plan], names: list[str],
                   record: str | None, full: dict[str, Plan], *,
                   trial: str | None = None) -> list[str]:
        """Drift on one ESP: ``plans`` is what must be there (the fit), ``full`` what each
        BE could have: an entry for a kernel the BE has but the fit left out (tight ESPs,
        or the running kernel changed) is not drift; sync removes it when it needs room."""
        where = f"ESP {st.uuid}"
        out: list[str] = []
        have = st.beadm_entries()
        for plan in plans.values():
            for k in plan.kernels:
                fname = ent.entry_filename(plan.be.name, k.kver)
                e = have.get(fname)
                want = ent.Entry(
                    title=ent.title_for(plan.be.name, plan.be.description, k.kver),
                    version=k.kver, options=plan.options,
                    linux="/beadm/" + _sname(k.vmlinuz, f"vmlinuz-{k.kver}", st),
                    initrd=("/beadm/" + _sname(k.initrd, f"initrd.img-{k.kver}", st),),
                    be=plan.be.name)
                if e is None:
                    out.append(f"{where}: entry {fname} is missing")
                elif e != want:
                    out.append(f"{where}: entry {fname} is out of date")
        for fname, e in have.items():
            owner = e.be or ent.be_of_id(fname, names)
            counted = ent.tries_left(fname) is not None
            if counted and ent.strip_counter(fname) != trial:
                out.append(f"{where}: entry {fname} is left from a trial that ended "
                           "(run 'beadm sync')")
            elif owner not in names:
                out.append(f"{where}: entry {fname} belongs to no BE")
            elif owner in full and not counted and fname not in full[owner].fnames():
                out.append(f"{where}: entry {fname} names a kernel BE {owner} no longer has")
            for rel in e.store_paths():
                if not st.has(rel):
                    out.append(f"{where}: entry {fname} names missing file /{rel}")
        for fname, be in _old_entries(st).items():
            out.append(f"{where}: entry {fname} of BE {be} is in the old shell beadm layout "
                       "(run 'beadm migrate')")
        referenced = {p for e in st.entry_files().values() for p in e.store_paths()}
        for name in st.store_files():
            if f"{ent.STORE_DIR}/{name}" not in referenced:
                out.append(f"{where}: /{ent.STORE_DIR}/{name} is referenced by no entry")
        if record in plans:
            target = plans[record].default_id
            d = st.loader_default()
            if d != target:
                out.append(f"{where}: loader.conf default is {d!r}, beadm activated "
                           f"{record} ({target})")
        return out

    # -- trial boots (see beadm.sdboot.trial) ------------------------------------------
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
            broken = [e for e in esps if e.store is None and not e.missing]
            if errors or broken or not any(e.store for e in esps):
                self._raise(esps, errors, notes)
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
                for esp in s.esps():
                    st = esp.store
                    if st is None:
                        warnings.append(esp.error or f"ESP {esp.uuid} is missing")
                        continue
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


@record
class _Room:
    """One ESP's space as the fit sees it (bytes, rounded up to clusters)."""

    store: EspStore
    free: int
    cluster: int
    held: int  # beadm's own stored kernels and initrds: freed when no entry needs them
    headroom: int  # Proxmox's largest kernel + initrd pair: what its next kernel needs

    def rounded(self, size: int) -> int:
        return _clusters(size, self.cluster)


def _clusters(size: int, cluster: int) -> int:
    """``size`` bytes rounded up to whole clusters (what a file takes on FAT)."""
    return -(-size // cluster) * cluster


def _rooms(esps: list[Esp]) -> list[_Room]:
    rooms = []
    for esp in esps:
        st = esp.store
        if st is None:
            continue
        try:
            free, cluster = _free_space(st.root)
            held = sum(_clusters((st.root / ent.STORE_DIR / n).stat().st_size, cluster)
                       for n in st.store_files())
            held += len(st.beadm_entries()) * cluster  # each entry file takes a cluster
            rooms.append(_Room(st, free, cluster, held, st.proxmox_pair_bytes()))
        except OSError as exc:  # the writes will say it again, per ESP
            log.debug("ESP %s: cannot measure its space: %s", esp.uuid, exc)
    return rooms


def _fits(rooms: list[_Room], plans: Iterable[Plan],
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


def _stored_everywhere(rooms: list[_Room], plan: Plan) -> bool:
    """Whether every ESP stores each of ``plan``'s kernel files already (content names)."""
    stores = [room.store for room in rooms]
    names = {content_name(src, basename, stores) for src, basename in plan.files()}
    return all(names <= set(room.store.store_files()) for room in rooms)


def _usage(st: EspStore, names: list[str]) -> EspUsage:
    """One ESP for the retention policy: every beadm entry (a cluster, its BE alone) and
    every stored file (rounded to clusters) with the BEs whose entries name it. A file an
    entry of no BE names (Proxmox's, a stray one) is never counted as freed."""
    v = os.statvfs(st.root)
    free, cluster = _free_space(st.root)
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
    for name in st.store_files():
        rel = f"{ent.STORE_DIR}/{name}"
        size = _clusters((st.root / rel).stat().st_size, cluster)
        files.append((size, frozenset(refs.get(rel, set()))))
    return EspUsage(st.uuid, v.f_blocks * v.f_frsize, free, tuple(files))


def _held_files(esps: list[Esp], names: list[str]) -> dict[str, set[str]]:
    """Per ESP: the stored files that the entries of BEs ``names`` name now."""
    out: dict[str, set[str]] = {}
    for esp in esps:
        if esp.store is None:
            continue
        out[esp.uuid] = {p.rsplit("/", 1)[-1] for e in esp.store.beadm_entries().values()
                         if e.be in names for p in e.store_paths()}
    return out


def _held_default(esps: list[Esp], name: str) -> str | None:
    """The entry of BE ``name`` with the newest kernel on the ESPs (a held BE's default)."""
    found = {fname: e.version or "" for esp in esps if esp.store is not None
             for fname, e in esp.store.beadm_entries().items() if e.be == name}
    if not found:
        return None
    return max(found, key=lambda f: version_key(found[f]))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _free_space(path: Path) -> tuple[int, int]:
    """(bytes free for writing, block size) of the file system at ``path``."""
    v = os.statvfs(path)
    return v.f_bavail * v.f_frsize, max(v.f_bsize, v.f_frsize)


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


def _drop_counted(st: EspStore) -> None:
    """Remove every counted beadm entry (a trial's) from one ESP."""
    for fname in st.beadm_entries():
        if ent.tries_left(fname) is not None:
            st.remove_entry(fname)


def _ids_of(esps: list[Esp], name: str) -> set[str]:
    """Ids of BE ``name``'s entries on any mounted ESP (by the entries' BE tag)."""
    return {fname for esp in esps if esp.store is not None
            for fname, e in esp.store.beadm_entries().items() if e.be == name}


def _old_entries(st: EspStore) -> dict[str, str]:
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


def _sname(path: Path, basename: str, st: EspStore) -> str:
    return content_name(path, basename, (st,))
