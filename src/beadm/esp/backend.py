"""What every ESP-based backend shares (systemd-boot, GRUB): the record, the plan of a BE.

The record of the activated BE (``org.beadm:next`` on the BE root), a BE's plan (its kernels
from its own ``/boot``, its own command line, Proxmox's kernel pin), writing its cmdline and
hooks, carrying the running BE's ESP list into it, running a step on every ESP and turning
what failed into one error, the room a rename and a BE's plan need (:mod:`beadm.esp.room`)
and each ESP's usage. :class:`EspBackend` is the base class; each backend adds where its
entries live and how the default is chosen (and :mod:`beadm.esp.drift`, the drift loop).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from beadm import confined
from beadm.backend import BeRef, EspUsage, KernelPin
from beadm.errors import BeadmError, BootError
from beadm.esp import cmdline as cmd
from beadm.esp import esplist, hooks, kernels, persist, room
from beadm.esp.host import Esp, Host, Session, SystemHost
from beadm.esp.notes import Notes
from beadm.esp.plan import Plan
from beadm.esp.store import EspStore
from beadm.runner import Runner
from beadm.zfs import Zfs

log = logging.getLogger(__name__)
RECORD = "org.beadm:next"


def _container(be: BeRef) -> str:
    return be.dataset.rsplit("/", 1)[0]


class EspBackend:
    """The parts of a backend that do not depend on the boot loader (see module doc)."""

    name = "esp"

    def __init__(self, runner: Runner, *, host: Host | None = None,
                 out: TextIO | None = None) -> None:
        self._runner = runner
        self._zfs = Zfs(runner)
        self._out = out if out is not None else sys.stdout
        self.host: Host = host if host is not None else SystemHost(runner, out=self._out)

    # -- what the loader says (its subclass) -------------------------------------------
    #: clusters a change writes besides the kernel files (a menu rewritten whole)
    menu_clusters = 0

    def _headroom(self, st: EspStore) -> int:
        """What Proxmox's next kernel needs on ``st`` (where the loader's layout keeps it)."""
        return room.proxmox_pair_bytes(st)

    def _rename_need(self, st: EspStore, old: BeRef, new: BeRef,
                     cluster: int) -> tuple[int, str]:
        """Bytes the rename of ``old`` to ``new`` needs free on ``st``, and for what."""
        raise NotImplementedError

    def _claims(self, st: EspStore, names: list[str],
                cluster: int) -> tuple[list[tuple[int, frozenset[str]]], dict[str, set[str]]]:
        """The loader's files on ``st`` and who needs each stored file (:data:`room.Claims`)."""
        raise NotImplementedError

    def _prepare_loader(self, s: Session, be: BeRef) -> None:
        """What the loader needs inside BE ``be`` besides its cmdline (GRUB: zfs.cfg)."""

    # -- one session for the whole command (beadm.be holds it) -----------------------
    def hold(self) -> contextlib.AbstractContextManager[None]:
        """Share one session (namespace, ESP and BE mounts) between every hook and look
        into a BE until the hold ends (see :mod:`beadm.esp.host`)."""
        return self.host.hold()

    def release(self) -> None:
        """Unmount everything of the held session now (it reopens when needed)."""
        self.host.release()

    def be_view(self, be: BeRef, *, writable: bool) -> Path | None:
        """The root dataset of BE ``be`` (alone) mounted in the held session, valid until
        it is released: what the activate guard and the shared-state drop-ins read and
        write, so that the BE is mounted once per command. None when nothing is held."""
        if not self.host.holding:
            return None
        with self.host.session() as s:
            return s.be_root(be, writable=writable)

    # -- the record ----------------------------------------------------------------
    def _get_record(self, container: str) -> str | None:
        try:
            value = self._zfs.get(container, RECORD).strip()
        except BeadmError:
            return None
        return value if value and value != "-" else None

    def _set_record(self, container: str, name: str | None, *, ask: bool = True) -> None:
        """``ask``: leave an equal record alone (a query first); else set it right away
        (one process instead of two: activate, issue 15)."""
        if name is None:
            self._zfs.inherit(container, RECORD)
        elif not ask or self._get_record(container) != name:
            self._zfs.set(container, RECORD, name)

    def _forget(self, be: BeRef) -> None:
        """BE ``be`` is gone: the record no longer names it."""
        if self._get_record(_container(be)) == be.name:
            self._set_record(_container(be), None)

    def _plan(self, s: Session, be: BeRef, notes: Notes, *, prepare: bool) -> Plan:
        """Read BE ``be``'s kernels and command line (``prepare``: also write its cmdline
        and hooks, which needs it mounted read-write); what is worth a warning goes to
        ``notes``."""
        root = s.be_root(be, writable=prepare)
        fallback = self.host.proc_cmdline() if be.running else None
        try:
            options = cmd.wanted(root, be.name, be.dataset, fallback)
            if prepare:
                self._write_cmdline(root, options)
                hooks.install(root, dry_run=self._runner.dry_run, out=self._out)
                if persist.install(root, dry_run=self._runner.dry_run, out=self._out) \
                        and be.running and root == Path("/"):
                    note = persist.start_now(self._runner)
                    if note:
                        notes.add(note)
        except OSError as exc:  # a link out of the BE (beadm.confined), a read-only tree...
            raise BootError(f"BE {be.name}: {confined.why(exc)}") from exc
        keep = self.host.running_kernel() if be.running else None
        pin = kernels.pinned(root)
        found = kernels.find(root, keep=keep, pin=pin)
        if not found:
            raise BootError(f"BE {be.name} has no kernel with an initrd in its /boot")
        if pin is not None and all(k.kver != pin for k in found):
            note = (f"BE {be.name}: the pinned kernel {pin} is not in its /boot "
                    "(proxmox-boot-tool kernel unpin?): it boots its newest")
            notes.add(note)
            pin = None
        return Plan(be, options, tuple(found), pin, keep)

    def _esp_list_drift(self, s: Session, be: BeRef) -> tuple[esplist.EspList | None,
                                                              list[esplist.Drift]]:
        """The running root's ESP list and where BE ``be``'s own copy differs from it
        (nothing for the running BE: its list is the reference)."""
        if be.running:
            return None, []
        try:
            want = esplist.EspList.of(self.host.etc_kernel)
            if want is None:
                return None, []
            return want, esplist.drift(s.be_root(be, writable=False), want)
        except OSError as exc:
            raise BootError(f"BE {be.name}: cannot compare its ESP list: {exc}") from exc

    def _carry_esp_list(self, s: Session, be: BeRef, notes: Notes) -> None:
        """Write the running root's ESP list into BE ``be`` where it differs (a BE cloned
        before a disk replacement lists the gone ESP; see :mod:`beadm.esp.esplist`)."""
        want, drift = self._esp_list_drift(s, be)
        if want is None or not drift:
            return
        todo = []
        for d in drift:
            kept = d.would_drop(want, self.host.esp_present)
            if kept:
                notes.add(esplist.describe(be.name, d, want, kept))
            else:
                todo.append(d)
        if not todo:
            return
        try:
            esplist.carry(s.be_root(be, writable=True), todo, want,
                          dry_run=self._runner.dry_run, out=self._out)
        except OSError as exc:
            raise BootError(f"BE {be.name}: cannot write its ESP list: {exc}") from exc

    def _write_cmdline(self, root: Path, options: str) -> None:
        """Write ``options`` as the first line of the BE's cmdline (the rest kept), inside
        the BE only (:mod:`beadm.confined`: a link on the way is refused)."""
        if cmd.first_line(root) == options:
            return
        if self._runner.dry_run:
            print(f"would write {root / cmd.CMDLINE}: {options}", file=self._out)
            return
        try:
            rest = confined.read_text(root, cmd.CMDLINE).splitlines()[1:]
        except FileNotFoundError:
            rest = []
        confined.write_file(root, cmd.CMDLINE,
                            ("\n".join([options, *rest]) + "\n").encode("utf-8"), fsync=False)

    def _each(self, esps: list[Esp], errors: list[str], step: str,
              fn: Callable[[EspStore], object]) -> list[Esp]:
        """Run ``fn`` on every available ESP; collect failures, return the ESPs that took it."""
        done = []
        for esp in esps:
            if esp.store is None:
                continue
            try:
                fn(esp.store)
            except BootError as exc:
                errors.append(exc.message)
                esp.store = None  # leave this ESP alone for the rest of the command
                continue
            except OSError as exc:
                errors.append(f"ESP {esp.uuid}: {step}: {exc}")
                esp.store = None
                continue
            done.append(esp)
        return done

    @staticmethod
    def _raise(esps: list[Esp], errors: list[str], notes: Notes) -> None:
        """End of a changing hook: raise what failed. An ESP whose device is missing (a
        degraded mirror) is a loud warning, not an error, as long as one ESP is there:
        the others took the change, and ``sync`` completes the missing one when it is
        back (until then, booted from, it boots what it booted before)."""
        problems = [e.error or f"ESP {e.uuid} failed" for e in esps
                    if e.store is None and e.error and not e.missing] + errors
        missing = [e for e in esps if e.missing]
        if missing and len(missing) == len(esps):
            problems.insert(0, "no ESP of the list is present: " +
                            "; ".join(e.error or e.uuid for e in missing))
        elif missing:
            for e in missing:
                note = (f"{e.error}: changed the other ESPs only; run 'beadm sync' once it "
                        "is back (booted from meanwhile, it boots what it booted before)")
                notes.add(note)
        if problems:
            raise BootError("; ".join(problems))

    def _staged(self, s: Session, be: BeRef, notes: Notes, *,
                prepare: bool) -> tuple[Plan, list[Esp]]:
        """The start of every change to one BE's boot files: its plan (``prepare``: its
        cmdline, hooks and the loader's own files written first), the ESPs at hand, the plan
        fitted to them, and the running root's ESP list carried into the BE (booted, it must
        sync the ESPs this BE syncs)."""
        plan = self._plan(s, be, notes, prepare=prepare)
        if prepare:
            self._prepare_loader(s, be)
        esps = s.esps()
        plan = self._fit_one(esps, plan, notes)
        self._carry_esp_list(s, be, notes)
        return plan, esps

    def _all_or_nothing(self, esps: list[Esp], errors: list[str], notes: Notes) -> None:
        """Raise when a present ESP could not take a step (or none is there): before any
        default changes anywhere."""
        broken = [e for e in esps if e.store is None and not e.missing]
        if errors or broken or not any(e.store for e in esps):
            self._raise(esps, errors, notes)

    def _fit_one(self, esps: list[Esp], plan: Plan, notes: Notes) -> Plan:
        """``plan``, or its lean form on tight ESPs (:func:`beadm.esp.room.fit_one`)."""
        return room.fit_one(esps, plan, notes, self._headroom, self.menu_clusters)

    def check_rename(self, old: BeRef, new: BeRef) -> None:
        """Before any change: every ESP at hand has room for ``new``'s entries, so a full
        ESP refuses the rename instead of failing it half-way."""
        with self.host.session() as s:
            room.check_rename(s.esps(), lambda st, cluster: self._rename_need(st, old, new,
                                                                                cluster))

    def esp_usage(self, bes: list[BeRef]) -> tuple[EspUsage, ...] | None:
        """Per mounted ESP: its size, free space and beadm's files with the BEs whose
        entries need them (``prune``'s ESP floor). None when no ESP could be measured
        (a missing ESP is left out: the others still count)."""
        with self.host.session() as s:
            return room.usages(s.esps(), [b.name for b in bes], self._claims)

    def _exists(self, dataset: str) -> bool:
        return self._zfs.exists(dataset)

    def _running_pins(self, bes: list[BeRef]) -> tuple[KernelPin, ...]:
        """The running BE's kernel pin (files in / : no mount needed)."""
        for be in bes:
            if not be.running:
                continue
            with self.host.session() as s:
                root = s.be_root(be, writable=False)
                pin = kernels.pin_of(root)
                if pin is None:
                    return ()
                have = kernels.find(root, limit=0, pin=pin.kver)
                return (KernelPin(be.name, pin.kver, pin.once, bool(have)),)
        return ()
