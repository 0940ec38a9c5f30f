"""Which boot loader does this host use? The ``--backend auto`` choice and guard.

proxmox-boot-tool lists GRUB ESPs in ``/etc/kernel/proxmox-boot-uuids`` too, and on every
refresh it uses GRUB for an ESP that has ``EFI/proxmox/grubx64.efi`` (Secure Boot installs:
shim + GRUB) or when the host did not boot in UEFI mode (legacy-BIOS ZFS installs; an ESP
without ``grub/`` is then skipped). GRUB ignores systemd-boot entries, ``loader.conf`` and the
pool's ``bootfs``; systemd-boot ignores GRUB's menu.

:class:`GuardedBackend` is what ``--backend auto`` uses on a proxmox-boot host. It decides
once per command, from the boot mode and the ESPs of the list: all systemd-boot ESPs (no
``EFI/proxmox/grubx64.efi``; ``EFI/systemd/`` or ``loader/`` present) on a UEFI boot: the
systemd-boot backend; all GRUB ESPs (UEFI, ``grubx64.efi``) or a legacy-BIOS boot with
``grub/`` on every ESP: the GRUB backend (when it was given one). Anything else (one ESP of
each kind, an ESP with no boot loader) refuses every boot-changing hook (and
:meth:`GuardedBackend.preflight`, which the BE library calls before it changes anything) with
:class:`~beadm.errors.UnsupportedError` and the reason (exit 7); ``list`` shows no BE as
booting next (not even the pool's ``bootfs``), ``check`` reports the reason, and ``sync
--if-used`` (the hooks) does nothing. ESPs that are missing are left to the backend itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from beadm import watchdog as wd
from beadm.backend import BeRef, BootState, Checked, EspUsage, Warnings
from beadm.errors import UnsupportedError
from beadm.sdboot.backend import SystemdBootBackend
from beadm.sdboot.trial import Trial

if TYPE_CHECKING:
    from beadm.grub.backend import GrubBackend

EFI_DIR = Path("/sys/firmware/efi")
GRUB_MARK = "EFI/proxmox/grubx64.efi"
SDBOOT = "systemd-boot"
GRUB = "grub"
EMPTY = "empty"


def esp_kind(root: Path) -> str:
    """What boots from the ESP mounted at ``root``: ``grub``, ``systemd-boot`` or ``empty``."""
    if (root / GRUB_MARK).exists():
        return GRUB
    if (root / "EFI" / "systemd").is_dir() or (root / "loader").is_dir():
        return SDBOOT
    return EMPTY


class GuardedBackend:
    """The backend this host boots with, or a refusal (exit 7) with the reason (module doc)."""

    name = SDBOOT

    def __init__(self, inner: SystemdBootBackend, *, efi_dir: Path = EFI_DIR,
                 grub: GrubBackend | None = None,
                 make_grub: Callable[[], GrubBackend] | None = None) -> None:
        self.inner = inner
        self._grub = grub
        self._make_grub = make_grub  # or the GRUB backend, built when first asked for
        self._efi_dir = efi_dir
        self._reason: str | None = None
        self._kind = SDBOOT
        self._checked = False

    @property
    def grub(self) -> GrubBackend | None:
        """The GRUB backend, if there is one: ``grub``, or ``make_grub()`` once it is needed
        (a GRUB host; a systemd-boot host never imports it: start-up time, issue 15)."""
        if self._grub is None and self._make_grub is not None:
            self._grub = self._make_grub()
            self._make_grub = None
        return self._grub

    def _target(self) -> SystemdBootBackend | GrubBackend:
        if self._kind == GRUB and self.grub is not None:
            return self.grub
        return self.inner

    # the session: the systemd-boot backend's host, which the GRUB backend shares (the
    # registry builds it so): one session whichever backend the host turns out to need
    def hold(self) -> contextlib.AbstractContextManager[None]:
        return self.inner.hold()

    def release(self) -> None:
        self.inner.release()

    def be_view(self, be: BeRef, *, writable: bool) -> Path | None:
        return self.inner.be_view(be, writable=writable)

    def reason(self) -> str | None:
        """Why beadm cannot manage this host's boot (None: it can). Mounts the ESPs once."""
        if self._checked:
            return self._reason
        self._checked = True
        self._reason = self._detect()
        self.name = self._kind if self._reason is None else self.name
        return self._reason

    def _detect(self) -> str | None:
        legacy = not self._efi_dir.is_dir()
        if legacy and self.grub is None:
            return ("this host booted in legacy BIOS mode: it boots through GRUB, "
                    "and this beadm manages systemd-boot (UEFI) hosts only")
        kinds: dict[str, str] = {}
        with self.inner.host.session() as s:
            for esp in s.esps():
                if esp.store is None:
                    continue
                root = esp.store.root
                if legacy:
                    if not (root / "grub").is_dir():
                        return (f"ESP {esp.uuid} has no GRUB (no grub/ directory) and this "
                                "host booted in legacy BIOS mode: run 'proxmox-boot-tool "
                                "reinit' first")
                    kinds[esp.uuid] = GRUB
                    continue
                kind = esp_kind(root)
                if kind == EMPTY:
                    return (f"ESP {esp.uuid} has no boot loader (neither EFI/systemd/, "
                            f"loader/ nor {GRUB_MARK}): run 'proxmox-boot-tool reinit' first")
                kinds[esp.uuid] = kind
        found = set(kinds.values())
        if len(found) > 1:
            grubs = ", ".join(u for u, k in kinds.items() if k == GRUB)
            sds = ", ".join(u for u, k in kinds.items() if k == SDBOOT)
            return (f"mixed host: ESP {grubs} boots with GRUB ({GRUB_MARK}), ESP {sds} with "
                    "systemd-boot; beadm needs every ESP of the list to boot the same way "
                    "('proxmox-boot-tool init' each ESP alike)")
        if found == {GRUB}:
            if self.grub is None:
                return (f"ESP {next(iter(kinds))} is a GRUB ESP ({GRUB_MARK}): this host "
                        "boots through GRUB, and beadm manages systemd-boot hosts only")
            self._kind = GRUB
        return None

    def trials(self) -> bool:
        """Trial boots need systemd-boot's boot counting: not on a GRUB or refused host."""
        return self.reason() is None and self._kind != GRUB

    def preflight(self) -> None:
        """Raise UnsupportedError before a boot-changing command changes anything."""
        why = self.reason()
        if why is not None:
            raise UnsupportedError(why)

    # -- BootBackend -------------------------------------------------------------------
    def boot_state(self, bes: list[BeRef]) -> BootState:
        why = self.reason()
        if why is not None:
            return BootState(warnings=(f"{why}; beadm cannot tell which BE boots next",),
                             decides=False)
        return self._target().boot_state(bes)

    def init(self, be: BeRef) -> Warnings:
        self.preflight()
        return self._target().init(be)

    def post_create(self, be: BeRef) -> Warnings:
        self.preflight()
        return self._target().post_create(be)

    def activate(self, be: BeRef, *, temporary: bool) -> Warnings:
        self.preflight()
        return self._target().activate(be, temporary=temporary)

    def check_rename(self, old: BeRef, new: BeRef) -> None:
        self.preflight()
        self._target().check_rename(old, new)

    def post_rename(self, old: BeRef, new: BeRef) -> Warnings:
        self.preflight()
        return self._target().post_rename(old, new)

    def post_destroy(self, be: BeRef) -> Warnings:
        self.preflight()
        return self._target().post_destroy(be)

    def check(self, bes: list[BeRef]) -> Checked:
        why = self.reason()
        if why is not None:
            return Checked((why,))
        return self._target().check(bes)

    def sync(self, bes: list[BeRef], *, only_if_used: bool = False) -> Warnings:
        if only_if_used and self.reason() is not None:
            return ()  # the hooks on a host beadm does not manage: nothing to do, quietly
        self.preflight()
        return self._target().sync(bes, only_if_used=only_if_used)

    def _sdboot_only(self, what: str) -> None:
        self.preflight()
        if self._kind == GRUB:
            raise UnsupportedError(f"{what} is for systemd-boot hosts: this host boots "
                                   "through GRUB")

    def migrate(self, bes: list[BeRef]) -> Warnings:
        self._sdboot_only("migrate (from the old shell beadm's systemd-boot layout)")
        return self.inner.migrate(bes)

    # -- trial boots (declared hooks; systemd-boot only) ---------------------------------
    def activate_trial(self, be: BeRef, fallback: BeRef, tries: int,
                       watchdog: int = wd.DEFAULT) -> Warnings:
        self._sdboot_only("activate --trial (systemd-boot's boot counting)")
        return self.inner.activate_trial(be, fallback, tries, watchdog)

    def end_trial(self, bes: list[BeRef]) -> Warnings:
        self._sdboot_only("ending a trial boot")
        return self.inner.end_trial(bes)

    def trial_state(self, bes: list[BeRef]) -> Trial | None:
        if self.reason() is not None or self._kind == GRUB:
            return None
        return self.inner.trial_state(bes)

    def esp_usage(self, bes: list[BeRef]) -> tuple[EspUsage, ...] | None:
        if self.reason() is not None:
            return None
        return self._target().esp_usage(bes)  # a GRUB host's own (issue 24: was systemd-boot's)

    def booted_trial(self) -> bool:
        if self.reason() is not None or self._kind == GRUB:
            return False
        return self.inner.booted_trial()
