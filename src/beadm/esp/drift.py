"""The drift loop over the BEs, for every loader: what ``check`` reports of each BE (its
plan, its cmdline, its ESP list) and what ``sync`` repairs there before it writes the ESPs.
What is on the ESPs themselves is the loader's to compare (its entries, its menu)."""

from __future__ import annotations

from pathlib import Path

from beadm.backend import BeRef
from beadm.errors import BootError
from beadm.esp import cmdline as cmd
from beadm.esp import esplist
from beadm.esp.backend import EspBackend
from beadm.esp.host import Session
from beadm.esp.notes import Notes
from beadm.esp.plan import Plan


class EspDrift(EspBackend):
    """:class:`EspBackend` with the per-BE half of ``check`` and ``sync``."""

    def _check_be(self, be: BeRef, root: Path, plan: Plan, facts: list[object]) -> list[str]:
        """The loader's own drift inside BE ``be`` (mounted at ``root``); facts worth a
        note go to ``facts``."""
        return []

    def _check_bes(self, s: Session, bes: list[BeRef], problems: list[str],
                   facts: list[object], notes: Notes) -> dict[str, Plan]:
        """Every BE's plan (a BE without one is a problem), and the drift inside each BE:
        its cmdline, the loader's own (:meth:`_check_be`), its ESP list."""
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
            problems += self._check_be(be, root, plan, facts)
            try:
                want, drift = self._esp_list_drift(s, be)
            except BootError as exc:
                problems.append(exc.message)
                continue
            if want is not None:
                problems += [esplist.describe(be.name, d, want,
                                              d.would_drop(want, self.host.esp_present))
                             for d in drift]
        return plans

    def _sync_plans(self, s: Session, bes: list[BeRef], errors: list[str],
                    notes: Notes) -> dict[str, Plan]:
        """Every BE's plan, with what :meth:`_check_bes` reports inside it repaired (its
        cmdline, the loader's own files, its ESP list); a BE that fails is an error."""
        plans: dict[str, Plan] = {}
        for be in bes:
            try:
                plan = self._plan(s, be, notes, prepare=False)
                if cmd.first_line(s.be_root(be, writable=False)) != plan.options:
                    plan = self._plan(s, be, notes, prepare=True)
                self._prepare_loader(s, be)
                plans[be.name] = plan
                self._carry_esp_list(s, be, notes)
            except BootError as exc:
                errors.append(exc.message)
            except OSError as exc:
                errors.append(f"BE {be.name}: cannot write its /etc/kernel/cmdline: {exc}")
        return plans
