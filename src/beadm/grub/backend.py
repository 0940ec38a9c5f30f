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
import os
import re
from pathlib import Path

from beadm.backend import BeRef, BootState, Checked, EspUsage, NoTrialBoots, Warnings
from beadm.errors import BeadmError, BootError, UnsupportedError
from beadm.esp import cmdline as cmd
from beadm.esp import entries as ent
from beadm.esp import esplist
from beadm.esp.backend import EspBackend, Plan, _container
from beadm.esp.host import Esp, Session
from beadm.esp.notes import Notes
from beadm.esp.store import EspStore, content_name
from beadm.grub import grubenv, menu, zfscfg
from beadm.grub.menu import CUSTOM_CFG, GRUB_CFG, GRUBENV, Item, Menu
from beadm.record import replace

log = logging.getLogger(__name__)
_LINUX = re.compile(r"^\s*linux\s+(\S+)(.*)$")


class GrubBackend(NoTrialBoots, EspBackend):
    """BEs booted by GRUB from every ESP in ``/etc/kernel/proxmox-boot-uuids``."""

    name = "grub"
    # GRUB has no boot counting here: activate -t is its one-time boot
    no_trials = ("activate --trial is for systemd-boot hosts (its boot counting): this host "
                 "boots through GRUB; 'beadm activate -t' boots a BE once")

    # -- one ESP ---------------------------------------------------------------------
    @staticmethod
    def _menu(st: EspStore) -> Menu:
        """beadm's menu on ``st`` (empty when there is none yet); refuses a custom.cfg
        beadm did not write: it is the admin's, and beadm would overwrite it."""
        text = st.read_text(CUSTOM_CFG)
        if text is None:
            return Menu()
        found = menu.parse(text)
        if found is None:
            raise BootError(f"ESP {st.uuid}: /{CUSTOM_CFG} was not written by beadm: move its "
                            "entries to /etc/grub.d/40_custom and remove it, then retry")
        return found

    def _items(self, st: EspStore, plan: Plan) -> tuple[Item, ...]:
        """Store ``plan``'s kernel files on ``st`` (files first), return its menu items."""
        out = []
        for k in plan.kernels:
            linux = st.put_file(k.vmlinuz, f"vmlinuz-{k.kver}")
            initrd = st.put_file(k.initrd, f"initrd.img-{k.kver}")
            out.append(Item(be=plan.be.name, kver=k.kver,
                            title=ent.title_for(plan.be.name, plan.be.description, k.kver),
                            options=plan.options, linux=linux, initrd=initrd))
        return tuple(out)

    @staticmethod
    def _want_items(plan: Plan, stores: list[EspStore]) -> tuple[Item, ...]:
        """The items of ``plan`` as they must be, without writing anything."""
        return tuple(
            Item(be=plan.be.name, kver=k.kver,
                 title=ent.title_for(plan.be.name, plan.be.description, k.kver),
                 options=plan.options,
                 linux=f"/{ent.STORE_DIR}/" + content_name(k.vmlinuz, f"vmlinuz-{k.kver}",
                                                          stores),
                 initrd=f"/{ent.STORE_DIR}/" + content_name(k.initrd,
                                                           f"initrd.img-{k.kver}", stores))
            for k in plan.kernels)

    @staticmethod
    def _write(st: EspStore, m: Menu) -> None:
        st.write_text(CUSTOM_CFG, m.render(st.uuid))

    @staticmethod
    def _gc(st: EspStore) -> None:
        """Free store files no menu item names (after the menu was written)."""
        text = st.read_text(CUSTOM_CFG)
        m = menu.parse(text) if text is not None else Menu()
        if m is None:
            return  # not beadm's menu: it cannot say what is in use, so nothing is freed
        st.gc(referenced=m.store_paths())

    @staticmethod
    def _env(st: EspStore) -> dict[str, str]:
        try:
            data = (st.root / GRUBENV).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return {}
        return grubenv.parse(data) or {}

    @staticmethod
    def _set_next(st: EspStore, entry: str | None) -> None:
        """``next_entry`` in the ESP's grubenv (None: removed), the rest of the block kept."""
        path = st.root / GRUBENV
        try:
            env = grubenv.parse(path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            env = {} if path.parent.is_dir() else None
        if env is None:
            raise BootError(f"ESP {st.uuid}: /{GRUBENV} is not a GRUB environment block "
                            "(is GRUB installed on it? run 'proxmox-boot-tool reinit')")
        new = dict(env)
        if entry is None:
            new.pop(grubenv.NEXT_ENTRY, None)
        else:
            new[grubenv.NEXT_ENTRY] = entry
        if new != env:
            st.write_text(GRUBENV, grubenv.render(new).decode("utf-8"))

    # -- building blocks -----------------------------------------------------------------
    def _prepare_grub(self, s: Session, be: BeRef) -> None:
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

    def _fit(self, esps: list[Esp], plan: Plan, notes: Notes) -> Plan:
        """``plan`` if every ESP takes its files with room left for Proxmox's next kernel
        (as large as its largest pair at the ESP root), else its lean form, else an error
        before anything is written."""
        def problems(p: Plan) -> list[str]:
            out = []
            for esp in esps:
                st = esp.store
                if st is None:
                    continue
                try:
                    v = os.statvfs(st.root)
                    free, cluster = v.f_bavail * v.f_frsize, max(v.f_bsize, v.f_frsize)
                    need = st.bytes_to_add(p.files(), cluster) + 2 * cluster
                    headroom = _root_pair_bytes(st.root)
                except OSError as exc:
                    out.append(f"ESP {esp.uuid}: {exc.strerror or exc}")
                    continue
                if free - need < headroom:
                    out.append(f"ESP {esp.uuid} has {free >> 20} MiB free; BE {p.be.name}'s "
                               f"kernels need {need >> 20} MiB and Proxmox's next kernel "
                               f"{headroom >> 20} MiB")
            return out

        for esp in esps:  # a foreign custom.cfg anywhere: refuse before any write
            if esp.store is not None:
                self._menu(esp.store)
        found = problems(plan)
        if not found:
            return plan
        lean = plan.lean()
        if lean.kernels != plan.kernels and not problems(lean):
            self._note_lean([plan.be.name], notes)
            return lean
        raise BootError("not enough room on the ESPs, nothing written: " + "; ".join(found)
                        + " (destroy an unused BE, or remove old kernels, then retry)")

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
            plan = self._plan(s, be, notes, prepare=True)
            self._prepare_grub(s, be)
            esps = s.esps()
            errors: list[str] = []
            plan = self._fit(esps, plan, notes)
            self._carry_esp_list(s, be, notes)
            rec = self._get_record(_container(be))

            def put(st: EspStore) -> None:
                m = self._menu(st)
                items = self._items(st, plan)
                new = m.with_be(be.name, items, replacing=old)
                gone = {i.id for i in m.of_be(old)} if old else set()
                gone |= {i.id for i in m.of_be(be.name)} - {i.id for i in items}
                if m.default in gone:  # the default followed the rename / a removed kernel
                    new = replace(new, default=self._id(plan))
                self._write(st, new)
                if old is not None and self._env(st).get(grubenv.NEXT_ENTRY) in gone:
                    self._set_next(st, menu.entry_id(be.name, plan.default_kver))
                self._gc(st)

            self._each(esps, errors, "GRUB menu", put)
            if old is not None and rec == old:
                self._set_record(_container(be), be.name)
            self._raise(esps, errors, notes)
            dead = _fallback_dead(esps, replacing) if replacing is not None else ()
        if dead:
            self._revive_fallback(dead, replacing.dataset if replacing else "", notes)
        return notes.done()

    def migrate(self, bes: list[BeRef]) -> Warnings:
        raise UnsupportedError("migrate (from the old shell beadm's systemd-boot layout) is "
                               "for systemd-boot hosts: this host boots through GRUB")

    def esp_usage(self, bes: list[BeRef]) -> tuple[EspUsage, ...] | None:
        return None  # not measured for GRUB's layout yet: unknown, prune's ESP floor is off

    def activate(self, be: BeRef, *, temporary: bool) -> Warnings:
        notes = Notes()
        with self.host.session() as s:
            plan = self._plan(s, be, notes, prepare=False)
            esps = s.esps()
            errors: list[str] = []
            plan = self._fit(esps, plan, notes)
            self._carry_esp_list(s, be, notes)
            target = self._id(plan)
            staged: dict[str, tuple[Item, ...]] = {}

            def stage(st: EspStore) -> None:  # files on every ESP before any menu changes
                staged[st.uuid] = self._items(st, plan)

            self._each(esps, errors, "kernel files", stage)
            broken = [e for e in esps if e.store is None and not e.missing]
            if errors or broken or not any(e.store for e in esps):
                self._raise(esps, errors, notes)  # an ESP that cannot take them: change nothing

            def commit(st: EspStore) -> None:
                m = self._menu(st).with_be(be.name, staged[st.uuid])
                if temporary:
                    self._write(st, m)
                    self._set_next(st, target)
                else:
                    self._write(st, replace(m, default=target))
                    nxt = self._env(st).get(grubenv.NEXT_ENTRY)
                    if nxt and nxt.startswith(menu.ID_PREFIX):
                        self._set_next(st, None)  # a pending once-boot is overridden
                self._gc(st)

            self._each(esps, errors, "GRUB menu", commit)
            if not temporary and not errors:
                self._set_record(_container(be), be.name)
            self._raise(esps, errors, notes)
        return notes.done()

    def check_rename(self, old: BeRef, new: BeRef) -> None:
        """Before any change: every ESP at hand can take a new custom.cfg."""
        with self.host.session() as s:
            problems = []
            for esp in s.esps():
                st = esp.store
                if st is None:
                    continue
                try:
                    self._menu(st)
                    v = os.statvfs(st.root)
                    free, cluster = v.f_bavail * v.f_frsize, max(v.f_bsize, v.f_frsize)
                    size = len((st.read_text(CUSTOM_CFG) or "").encode()) + 4096
                except OSError as exc:
                    problems.append(f"ESP {esp.uuid}: {exc.strerror}")
                    continue
                except BootError as exc:
                    problems.append(exc.message)
                    continue
                if free < -(-size // cluster) * cluster:
                    problems.append(f"ESP {esp.uuid} has {free} bytes free, too little for "
                                    f"a new /{CUSTOM_CFG}")
            if problems:
                raise BootError("not renaming: " + "; ".join(problems))

    def post_destroy(self, be: BeRef) -> Warnings:
        notes = Notes()
        if self._get_record(_container(be)) == be.name:
            self._set_record(_container(be), None)
        with self.host.session() as s:
            esps = s.esps()
            errors: list[str] = []

            def drop(st: EspStore) -> None:
                text = st.read_text(CUSTOM_CFG)
                if text is None:
                    return
                m = self._menu(st)
                mine = {i.id for i in m.of_be(be.name)}
                new = m.with_be(be.name, ())
                if new.default in mine:
                    new = replace(new, default=None)  # grub.cfg's own first entry decides
                if self._env(st).get(grubenv.NEXT_ENTRY) in mine:
                    self._set_next(st, None)
                self._write(st, new)
                self._gc(st)

            self._each(esps, errors, "remove entries", drop)
            self._raise(esps, errors, notes)
            dead = _fallback_dead(esps, be)
        self._revive_fallback(dead, be.dataset, notes)
        return notes.done()

    def _revive_fallback(self, dead: tuple[str, ...], gone: str, notes: Notes) -> None:
        """Proxmox's own entries in grub.cfg boot whichever BE ran the last refresh. When
        that BE is gone, refresh from the running BE (whose zfs.cfg beadm keeps right). A
        refresh never touches custom.cfg or grubenv: nothing to put back afterwards."""
        if not dead:
            return
        note = (f"Proxmox's GRUB entries (grub.cfg) on ESP {', '.join(dead)} boot {gone}, "
                "which is gone")
        if self._runner.dry_run:
            self._runner.run(["proxmox-boot-tool", "refresh"])
            return
        self.host.release()  # the refresh mounts the ESPs itself, in the host's namespace
        log.warning("%s: running proxmox-boot-tool refresh from the running BE", note)
        try:
            self._runner.run(["proxmox-boot-tool", "refresh"])
        except BeadmError as exc:  # a warning: the destroy or rename stands
            notes.add(f"{note}; 'proxmox-boot-tool refresh' failed ({exc}): "
                                 "run it yourself once the cause is fixed")

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
                    self._menu(esp.store)
            errors: list[str] = []
            plans: dict[str, Plan] = {}
            for be in bes:
                try:
                    plan = self._plan(s, be, notes, prepare=False)
                    if cmd.first_line(s.be_root(be, writable=False)) \
                            != plan.options:
                        plan = self._plan(s, be, notes, prepare=True)
                    self._prepare_grub(s, be)
                    plans[be.name] = plan
                    self._carry_esp_list(s, be, notes)
                except BootError as exc:
                    errors.append(exc.message)
                except OSError as exc:
                    errors.append(f"BE {be.name}: cannot write its /etc/kernel/cmdline: {exc}")
            record = self._get_record(_container(bes[0])) if bes else None
            target = self._id(plans[record]) if record in plans else None
            names = {b.name for b in bes}
            present = [e.store for e in esps if e.store is not None]
            nexts = [self._env(st).get(grubenv.NEXT_ENTRY) or "" for st in present]
            ours = [n for n in nexts if n.startswith(menu.ID_PREFIX)]
            consumed = bool(ours) and len(ours) < len(nexts)

            def put(st: EspStore) -> None:
                m = self._menu(st)
                kept = [i for i in m.items if i.be not in plans and i.be in names]
                items = [*kept]
                for plan in plans.values():
                    items += self._items(st, plan)
                new = Menu(menu.sort_items(items), target)
                if target is None and m.default in new.ids():
                    new = replace(new, default=m.default)  # e.g. a held BE stays default
                nxt = self._env(st).get(grubenv.NEXT_ENTRY) or ""
                if nxt.startswith(menu.ID_PREFIX) and (consumed or nxt not in new.ids()):
                    self._set_next(st, None)
                self._write(st, new)
                self._gc(st)

            self._each(esps, errors, "GRUB menu", put)
            self._raise(esps, errors, notes)
        return notes.done()

    def check(self, bes: list[BeRef]) -> Checked:
        problems: list[str] = []
        notes = Notes()  # what a changing hook would warn of (a pinned kernel gone, ...)
        with self.host.session() as s:
            plans: dict[str, Plan] = {}
            for be in bes:
                try:
                    plan = self._plan(s, be, notes, prepare=False)
                except BootError as exc:
                    problems.append(exc.message)
                    continue
                plans[be.name] = plan
                root = s.be_root(be, writable=False)
                current = cmd.first_line(root)
                if current != plan.options:
                    problems.append(f"BE {be.name}: /etc/kernel/cmdline is {current!r}, "
                                    f"should be {plan.options!r}")
                why = zfscfg.drift(root, be.dataset)
                if why is not None:
                    problems.append(f"BE {be.name}: {why}")
                try:
                    want, drift = self._esp_list_drift(s, be)
                except BootError as exc:
                    problems.append(exc.message)
                    continue
                if want is not None:
                    problems += [esplist.describe(be.name, d, want,
                                                  d.would_drop(want, self.host.esp_present))
                                 for d in drift]
            record = self._get_record(_container(bes[0])) if bes else None
            target = self._id(plans[record]) if record in plans else None
            stores = [e.store for e in s.esps() if e.store is not None]
            items = [i for p in plans.values() for i in self._want_items(p, stores)]
            for esp in s.esps():
                st = esp.store
                if st is None:
                    problems.append(esp.error or f"ESP {esp.uuid} is missing")
                    continue
                problems += self._check_esp(st, Menu(menu.sort_items(items), target))
        return Checked(tuple(problems), tuple(notes))

    def _check_esp(self, st: EspStore, want: Menu) -> list[str]:
        where = f"ESP {st.uuid}"
        out: list[str] = []
        text = st.read_text(CUSTOM_CFG)
        if text is None:
            out.append(f"{where}: /{CUSTOM_CFG} is missing")
        elif not menu.is_beadm(text):
            out.append(f"{where}: /{CUSTOM_CFG} was not written by beadm")
        elif text != want.render(st.uuid):
            have = menu.parse(text) or Menu()
            if have.default != want.default:
                out.append(f"{where}: GRUB default is {have.default!r}, should be "
                           f"{want.default!r}")
            for i in want.items:
                if i not in have.items:
                    out.append(f"{where}: GRUB entry {i.id} is missing or out of date")
            for i in have.items:
                if i.id not in want.ids():
                    out.append(f"{where}: GRUB entry {i.id} belongs to no BE or kernel")
            if not out:
                out.append(f"{where}: /{CUSTOM_CFG} is out of date")
        cfg = st.read_text(GRUB_CFG)
        if cfg is None:
            out.append(f"{where}: /{GRUB_CFG} is missing (run 'proxmox-boot-tool refresh')")
        elif "custom.cfg" not in cfg:
            out.append(f"{where}: /{GRUB_CFG} does not read custom.cfg: beadm's entries are "
                       "not in GRUB's menu (restore /etc/grub.d/41_custom, then run "
                       "'proxmox-boot-tool refresh')")
        if (st.root / GRUBENV).exists() and grubenv.parse((st.root / GRUBENV).read_bytes()) \
                is None:
            out.append(f"{where}: /{GRUBENV} is not a valid GRUB environment block")
        parsed = menu.parse(text) if text is not None else None
        for rel in sorted(parsed.store_paths() if parsed else set()):
            if not st.has(rel):
                out.append(f"{where}: GRUB menu names missing file /{rel}")
        used = parsed.store_paths() if parsed else set()
        for name in st.store_files():
            if f"{ent.STORE_DIR}/{name}" not in used:
                out.append(f"{where}: /{ent.STORE_DIR}/{name} is referenced by no entry")
        return out

    def boot_state(self, bes: list[BeRef]) -> BootState:
        names = [b.name for b in bes]
        by_ds = {b.dataset: b.name for b in bes}
        picks: dict[str, str | None] = {}
        onces: dict[str, str | None] = {}
        warnings: list[str] = []
        with self.host.session() as s:
            for esp in s.esps():
                st = esp.store
                if st is None:
                    warnings.append(esp.error or f"ESP {esp.uuid} is missing")
                    continue
                text = st.read_text(CUSTOM_CFG)
                m = menu.parse(text) if text is not None else None
                items = {i.id: i.be for i in m.items} if m else {}
                nxt = self._env(st).get(grubenv.NEXT_ENTRY)
                if nxt:
                    onces[st.uuid] = items.get(nxt)
                if m is not None and m.default in items:
                    picks[st.uuid] = items[m.default]
                else:  # grub.cfg's first entry: Proxmox's, the BE that refreshed last
                    root = _grubcfg_root(st.read_text(GRUB_CFG) or "")
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


def _root_pair_bytes(root: Path) -> int:
    """The largest kernel + initrd Proxmox keeps at the ESP root (GRUB mode): about what its
    next kernel update needs there."""
    best = 0
    for vml in root.glob("vmlinuz-*"):
        ird = root / f"initrd.img-{vml.name[len('vmlinuz-'):]}"
        size = vml.stat().st_size + (ird.stat().st_size if ird.is_file() else 0)
        best = max(best, size)
    return best


def _grubcfg_root(text: str) -> str | None:
    """The dataset the first ``linux`` line of a grub.cfg boots (its last ``root=ZFS=``)."""
    for line in text.splitlines():
        m = _LINUX.match(line)
        if m:
            roots = [w[len("root=ZFS="):] for w in m.group(2).split() if w.startswith("root=ZFS=")]
            return roots[-1] if roots else None
    return None


def _fallback_dead(esps: list[Esp], be: BeRef) -> tuple[str, ...]:
    """The ESPs whose grub.cfg (Proxmox's entries) boots ``be``."""
    dead = []
    for esp in esps:
        st = esp.store
        if st is not None and _grubcfg_root(st.read_text(GRUB_CFG) or "") == be.dataset:
            dead.append(st.uuid)
    return tuple(dead)
