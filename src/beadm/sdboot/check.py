"""``check`` of the systemd-boot backend: drift inside each BE (:mod:`beadm.esp.drift`),
on every ESP (entries, stored files, ``loader.conf``) and in the EFI variables, against the
same fit ``sync`` stores (tight ESPs: lean plans, held BEs)."""

from __future__ import annotations

from pathlib import Path

from beadm.backend import BeRef, Checked, KernelPin
from beadm.esp import entries as ent
from beadm.esp import kernels
from beadm.esp.backend import _container
from beadm.esp.efivars import DEFAULT
from beadm.esp.host import at_hand
from beadm.esp.notes import Notes
from beadm.esp.plan import Plan
from beadm.esp.store import EspStore
from beadm.sdboot.base import SdBase, _sname
from beadm.sdboot.migrate import old_entries


class CheckHook(SdBase):
    """``check`` (see the module doc)."""

    def _check_be(self, be: BeRef, root: Path, plan: Plan, facts: list[object]) -> list[str]:
        """No drift of systemd-boot's own inside a BE; its kernel pin is worth a note."""
        pin = kernels.pin_of(root)
        if pin is not None:
            facts.append(KernelPin(be.name, pin.kver, pin.once, plan.pin is not None).describe())
        return []

    def check(self, bes: list[BeRef]) -> Checked:
        problems: list[str] = []
        facts: list[object] = []  # the kernel pins, a pending trial
        notes = Notes()  # what a changing hook would warn of (a tight ESP, ...)
        with self.host.session() as s:
            plans = self._check_bes(s, bes, problems, facts, notes)
            esps = s.esps()
            names = [b.name for b in bes]
            record = self._get_record(_container(bes[0])) if bes else None
            full = dict(plans)
            plans, held = self._fit_all(esps, plans, bes, notes)
            problems += held.values()
            base = self._pending_trial(esps)
            for st in at_hand(esps, problems):
                problems += self._check_esp(st, plans, names, record, full,
                                            trial=base)
            if base is not None:
                facts.append(f"a trial boot of {self._be_of_id(base, names)} is pending "
                                  f"(LoaderEntryDefault={self.host.efivars.get(DEFAULT)})")
            if record in plans and self.host.efivars.available() and base is None:
                cur = self.host.efivars.get(DEFAULT)
                if cur is not None and cur != plans[record].default_id:
                    problems.append(f"EFI {DEFAULT} is {cur}, beadm activated {record}")
        return Checked(tuple(problems), tuple(facts), notes.done())

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
        for fname, be in old_entries(st).items():
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
