"""The GRUB backend: :class:`GrubBackend` implements ``BootBackend`` (see the package doc).

How the next boot is chosen and kept:

* **Record.** As with systemd-boot, the activated BE is the ZFS user property
  ``org.beadm:next`` on the BE root; ``sync`` (the hooks, the shutdown re-assert) writes every
  ESP's menu from it.
* **activate NAME.** Kernel files first, then on each ESP ``grub/custom.cfg`` is rewritten
  whole (temporary file, fsync, rename) with every BE's entries and ``set default`` = NAME's
  entry: the rename is the commit on that ESP. Then the record. Proxmox's refresh, reinit and
  ``update-grub`` regenerate only ``grub.cfg`` (which sources custom.cfg after its own
  entries) and copy kernels to the ESP root: the choice survives them by construction.
* **activate -t NAME.** NAME's entries are written (default unchanged), then ``next_entry``
  in each ESP's ``grub/grubenv`` (Debian's 00_header boots it once and clears it on the ESP
  GRUB loaded; custom.cfg does not override a one-shot). Once some ESPs hold beadm's
  ``next_entry`` and others do not, the one-shot happened (or a kill cut ``-t`` short): the
  next ``sync`` clears it everywhere, so a later boot from the other disk does not repeat it.
* **Not activated** (after ``init``): custom.cfg sets no default; GRUB boots grub.cfg's first
  entry, Proxmox's, i.e. the BE that refreshed last; ``list`` reads it from grub.cfg.

A kill at any step leaves each ESP with its old or its new custom.cfg, both complete, whose
files are all there (files are written before the menu naming them, and freed only after).
No trial boots (``activate --trial``) and no ``migrate`` on GRUB hosts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from beadm.backend import BeRef, BootState, Checked, NoTrialBoots, Warnings
from beadm.errors import BootError, UnsupportedError
from beadm.esp import fallback, room
from beadm.esp.backend import _container
from beadm.esp.drift import EspDrift
from beadm.esp.host import Esp, Session, at_hand
from beadm.esp.notes import Notes
from beadm.esp.plan import Plan
from beadm.esp.store import EspStore
from beadm.grub import espfiles, grubenv, menu, zfscfg
from beadm.grub.check import check_esp
from beadm.grub.espfiles import read_menu
from beadm.grub.menu import CUSTOM_CFG, GRUB_CFG, Item, Menu
from beadm.record import replace

log = logging.getLogger(__name__)


class GrubBackend(NoTrialBoots, EspDrift):
    """BEs booted by GRUB from every ESP in ``/etc/kernel/proxmox-boot-uuids``."""

    name = "grub"
    # GRUB has no boot counting here: activate -t is its one-time boot
    no_trials = ("activate --trial is for systemd-boot hosts (its boot counting): this host "
                 "boots through GRUB; 'beadm activate -t' boots a BE once")

    menu_clusters = 2  # custom.cfg is rewritten whole (a temporary file, then the rename)

    # -- building blocks -----------------------------------------------------------------
    def _headroom(self, st: EspStore) -> int:
        return room.root_pair_bytes(st)  # GRUB mode: Proxmox keeps kernels at the ESP root

    def _prepare_loader(self, s: Session, be: BeRef) -> None:
        """The BE's own zfs.cfg names the BE (Proxmox's regenerated entries boot it)."""
        root = s.be_root(be, writable=False)
        why = zfscfg.drift(root, be.dataset)
        if why is None:
            return
        if self._runner.dry_run:
            print(f"would rewrite BE {be.name}'s /{zfscfg.ZFS_CFG}: {why}", file=self._out)
            return
        try:
            zfscfg.fix(s.be_root(be, writable=True), be.dataset)
        except OSError as exc:
            raise BootError(f"BE {be.name}: cannot write /{zfscfg.ZFS_CFG}: {exc}") from exc

    def _fit_one(self, esps: list[Esp], plan: Plan, notes: Notes) -> Plan:
        """A foreign custom.cfg anywhere refuses before any write; then the fit."""
        for esp in esps:
            if esp.store is not None:
                read_menu(esp.store)
        return super()._fit_one(esps, plan, notes)

    def _id(self, plan: Plan) -> str:
        return menu.entry_id(plan.be.name, plan.default_kver)

    # -- the protocol --------------------------------------------------------------------
    def preflight(self) -> None:
        """Nothing to refuse: ``--backend grub`` is the admin's choice (``auto`` checks)."""

    def init(self, be: BeRef) -> Warnings:
        return self._make_bootable(be)

    def post_create(self, be: BeRef) -> Warnings:
        return self._make_bootable(be)

    def post_rename(self, old: BeRef, new: BeRef) -> Warnings:
        """Also the undo of a failed rename (called with old and new swapped)."""
        return self._make_bootable(new, replacing=old)

    def _make_bootable(self, be: BeRef, *, replacing: BeRef | None = None) -> Warnings:
        notes = Notes()
        if self._runner.dry_run and not self._exists(be.dataset):
            print(f"would write {be.dataset}'s /etc/kernel/cmdline and /{zfscfg.ZFS_CFG} "
                  f"(root=ZFS={be.dataset}), its zzz-beadm hooks, and GRUB entries for the "
                  f"kernels in its /boot in /{CUSTOM_CFG} on every ESP", file=self._out)
            return ()
        old = replacing.name if replacing is not None else None
        with self.host.session() as s:
            plan, esps = self._staged(s, be, notes, prepare=True)
            errors: list[str] = []
            rec = self._get_record(_container(be))

            def put(st: EspStore) -> None:
                m = read_menu(st)
                items = espfiles.put_items(st, plan)
                new = m.with_be(be.name, items, replacing=old)
                gone = {i.id for i in m.of_be(old)} if old else set()
                gone |= {i.id for i in m.of_be(be.name)} - {i.id for i in items}
                if m.default in gone:  # the default followed the rename / a removed kernel
                    new = replace(new, default=self._id(plan))
                espfiles.write(st, new)
                if old is not None and espfiles.env(st).get(grubenv.NEXT_ENTRY) in gone:
                    espfiles.set_next(st, menu.entry_id(be.name, plan.default_kver))
                espfiles.gc(st)

            self._each(esps, errors, "GRUB menu", put)
            if old is not None and rec == old:
                self._set_record(_container(be), be.name)
            self._raise(esps, errors, notes)
            dead = espfiles.fallback_dead(esps, replacing) if replacing is not None else ()
        if dead:
            self._revive_fallback(dead, replacing.dataset if replacing else "", notes)
        return notes.done()

    def migrate(self, bes: list[BeRef]) -> Warnings:
        raise UnsupportedError("migrate (from the old shell beadm's systemd-boot layout) is "
                               "for systemd-boot hosts: this host boots through GRUB")

    def activate(self, be: BeRef, *, temporary: bool) -> Warnings:
        notes = Notes()
        with self.host.session() as s:
            plan, esps = self._staged(s, be, notes, prepare=False)
            errors: list[str] = []
            target = self._id(plan)
            staged: dict[str, tuple[Item, ...]] = {}

            def stage(st: EspStore) -> None:  # files on every ESP before any menu changes
                staged[st.uuid] = espfiles.put_items(st, plan)

            self._each(esps, errors, "kernel files", stage)
            self._all_or_nothing(esps, errors, notes)  # an ESP that cannot take them

            def commit(st: EspStore) -> None:
                m = read_menu(st).with_be(be.name, staged[st.uuid])
                if temporary:
                    espfiles.write(st, m)
                    espfiles.set_next(st, target)
                else:
                    espfiles.write(st, replace(m, default=target))
                    nxt = espfiles.env(st).get(grubenv.NEXT_ENTRY)
                    if nxt and nxt.startswith(menu.ID_PREFIX):
                        espfiles.set_next(st, None)  # a pending once-boot is overridden
                espfiles.gc(st)

            self._each(esps, errors, "GRUB menu", commit)
            if not temporary and not errors:
                self._set_record(_container(be), be.name)
            self._raise(esps, errors, notes)
        return notes.done()

    def _claims(self, st: EspStore, names: list[str],
                cluster: int) -> tuple[list[tuple[int, frozenset[str]]], dict[str, set[str]]]:
        """beadm's menu (custom.cfg, kept while any BE is: freed by no destroy); per stored
        file the BEs whose menu items name it (an item of no BE: ``(entry ID)``, which never
        goes). A custom.cfg that is not beadm's names nothing: no file counts as freed."""
        text = st.read_text(CUSTOM_CFG)
        if text is None:
            return [], {}
        refs: dict[str, set[str]] = {}
        m = menu.parse(text)
        for item in m.items if m is not None else ():
            owner = item.be if item.be in names else f"(entry {item.id})"
            for path in item.store_paths():
                refs.setdefault(path, set()).add(owner)
        return [(room.clusters(len(text.encode()), cluster), frozenset())], refs

    def _rename_need(self, st: EspStore, old: BeRef, new: BeRef,
                     cluster: int) -> tuple[int, str]:
        """A new custom.cfg (refused where the one there is not beadm's)."""
        read_menu(st)
        size = len((st.read_text(CUSTOM_CFG) or "").encode()) + 4096
        return room.clusters(size, cluster), f"too little for a new /{CUSTOM_CFG}"

    def post_destroy(self, be: BeRef) -> Warnings:
        notes = Notes()
        errors: list[str] = []
        self._forget(be)
        with self.host.session() as s:
            esps = s.esps()

            def drop(st: EspStore) -> None:
                text = st.read_text(CUSTOM_CFG)
                if text is None:
                    return
                m = read_menu(st)
                mine = {i.id for i in m.of_be(be.name)}
                new = m.with_be(be.name, ())
                if new.default in mine:
                    new = replace(new, default=None)  # grub.cfg's own first entry decides
                if espfiles.env(st).get(grubenv.NEXT_ENTRY) in mine:
                    espfiles.set_next(st, None)
                espfiles.write(st, new)
                espfiles.gc(st)

            self._each(esps, errors, "remove entries", drop)
            self._raise(esps, errors, notes)
            dead = espfiles.fallback_dead(esps, be)
        self._revive_fallback(dead, be.dataset, notes)
        return notes.done()

    def _revive_fallback(self, dead: tuple[str, ...], gone: str, notes: Notes) -> None:
        """Proxmox's own entries in grub.cfg boot whichever BE ran the last refresh. When
        that BE is gone, refresh from the running BE (whose zfs.cfg beadm keeps right). A
        refresh never touches custom.cfg or grubenv: nothing to put back afterwards."""
        if dead:
            fallback.refresh(self._runner, self.host, f"Proxmox's GRUB entries (grub.cfg) on "
                             f"ESP {', '.join(dead)} boot {gone}, which is gone", notes)

    def sync(self, bes: list[BeRef], *, only_if_used: bool = False) -> Warnings:
        notes = Notes()
        with self.host.session() as s:
            esps = s.esps()
            if only_if_used and not any(
                    e.store and e.store.read_text(CUSTOM_CFG) is not None for e in esps):
                log.debug("sync: no ESP has beadm's custom.cfg yet (no init): nothing to do")
                return ()
            for esp in esps:  # a foreign custom.cfg anywhere: refuse before any write
                if esp.store is not None:
                    read_menu(esp.store)
            errors: list[str] = []
            plans = self._sync_plans(s, bes, errors, notes)
            record = self._get_record(_container(bes[0])) if bes else None
            target = self._id(plans[record]) if record in plans else None
            names = {b.name for b in bes}
            present = [e.store for e in esps if e.store is not None]
            nexts = [espfiles.env(st).get(grubenv.NEXT_ENTRY) or "" for st in present]
            ours = [n for n in nexts if n.startswith(menu.ID_PREFIX)]
            consumed = bool(ours) and len(ours) < len(nexts)

            def put(st: EspStore) -> None:
                m = read_menu(st)
                kept = [i for i in m.items if i.be not in plans and i.be in names]
                items = [*kept]
                for plan in plans.values():
                    items += espfiles.put_items(st, plan)
                new = Menu(menu.sort_items(items), target)
                if target is None and m.default in new.ids():
                    new = replace(new, default=m.default)  # e.g. a held BE stays default
                nxt = espfiles.env(st).get(grubenv.NEXT_ENTRY) or ""
                if nxt.startswith(menu.ID_PREFIX) and (consumed or nxt not in new.ids()):
                    espfiles.set_next(st, None)
                espfiles.write(st, new)
                espfiles.gc(st)

            self._each(esps, errors, "GRUB menu", put)
            self._raise(esps, errors, notes)
        return notes.done()

    def _check_be(self, be: BeRef, root: Path, plan: Plan, facts: list[object]) -> list[str]:
        why = zfscfg.drift(root, be.dataset)
        return [] if why is None else [f"BE {be.name}: {why}"]

    def check(self, bes: list[BeRef]) -> Checked:
        problems: list[str] = []
        notes = Notes()  # what a changing hook would warn of (a pinned kernel gone, ...)
        facts: list[object] = []
        with self.host.session() as s:
            plans = self._check_bes(s, bes, problems, facts, notes)
            record = self._get_record(_container(bes[0])) if bes else None
            target = self._id(plans[record]) if record in plans else None
            stores = [e.store for e in s.esps() if e.store is not None]
            items = [i for p in plans.values() for i in espfiles.want_items(p, stores)]
            for st in at_hand(s.esps(), problems):
                problems += check_esp(st, Menu(menu.sort_items(items), target))
        return Checked(tuple(problems), tuple(facts), notes.done())

    def boot_state(self, bes: list[BeRef]) -> BootState:
        names = [b.name for b in bes]
        by_ds = {b.dataset: b.name for b in bes}
        picks: dict[str, str | None] = {}
        onces: dict[str, str | None] = {}
        warnings: list[str] = []
        with self.host.session() as s:
            for st in at_hand(s.esps(), warnings):
                text = st.read_text(CUSTOM_CFG)
                m = menu.parse(text) if text is not None else None
                items = {i.id: i.be for i in m.items} if m else {}
                nxt = espfiles.env(st).get(grubenv.NEXT_ENTRY)
                if nxt:
                    onces[st.uuid] = items.get(nxt)
                if m is not None and m.default in items:
                    picks[st.uuid] = items[m.default]
                else:  # grub.cfg's first entry: Proxmox's, the BE that refreshed last
                    root = espfiles.grubcfg_root(st.read_text(GRUB_CFG) or "")
                    picks[st.uuid] = by_ds.get(root) if root else None
        values = list(picks.values())
        nxt_be = values[0] if values else None
        if len(set(values)) > 1:
            warnings.append("ESPs disagree on the next boot: " + ", ".join(
                f"{u}: {v or '?'}" for u, v in picks.items()) + " (run 'beadm sync')")
        once = next((v for v in onces.values() if v in names), None)
        record = self._get_record(_container(bes[0])) if bes else None
        if record is not None and record in names and nxt_be != record:
            warnings.append(f"beadm activated {record}, but GRUB now boots {nxt_be or 'no BE'}:"
                            f" run 'beadm activate {record}' or 'beadm sync'")
        return BootState(next_boot=nxt_be, once=once, warnings=tuple(warnings),
                         pins=self._running_pins(bes))


