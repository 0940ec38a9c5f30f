"""Is this a host beadm can boot? The ``--backend auto`` guard around the systemd-boot backend.

proxmox-boot-tool lists GRUB ESPs in ``/etc/kernel/proxmox-boot-uuids`` too, and on every
refresh it uses GRUB for an ESP that has ``EFI/proxmox/grubx64.efi`` (Secure Boot installs:
shim + GRUB) or when the host did not boot in UEFI mode (legacy-BIOS ZFS installs). GRUB
ignores systemd-boot entries, ``loader.conf`` and the pool's ``bootfs``: it boots what the
last ``proxmox-boot-tool refresh`` wrote into ``grub.cfg``. beadm writes systemd-boot entries
only, so on such a host it must change nothing and say why, rather than "activate" a BE that
will not boot.

:class:`GuardedBackend` wraps the systemd-boot backend for ``--backend auto``: every ESP of
the list must be a systemd-boot ESP (no ``EFI/proxmox/grubx64.efi``; ``EFI/systemd/`` or
``loader/`` present) and ``/sys/firmware/efi`` must exist. Otherwise every boot-changing
hook (and :meth:`GuardedBackend.preflight`, which the BE library calls before it changes
anything) raises :class:`~beadm.errors.UnsupportedError` with the reason; ``list`` shows no
BE as booting next (not even the pool's ``bootfs``), ``check`` reports the reason, and
``sync --if-used`` (the hooks) does nothing. ESPs that are missing are left to the backend
itself (it reports them as before).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from beadm import watchdog as wd
from beadm.backend import BeRef, BootState, EspUsage
from beadm.errors import UnsupportedError
from beadm.sdboot.backend import SystemdBootBackend
from beadm.sdboot.trial import Trial

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
    """The systemd-boot backend, refusing (exit 7) on a host it cannot boot (see module doc)."""

    name = SDBOOT

    def __init__(self, inner: SystemdBootBackend, *, efi_dir: Path = EFI_DIR) -> None:
        self.inner = inner
        self._efi_dir = efi_dir
        self._reason: str | None = None
        self._checked = False

    @property
    def warnings(self) -> list[str]:
        return self.inner.warnings

    @property
    def notes(self) -> list[str]:
        return self.inner.notes

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
        if not self._efi_dir.is_dir():
            self._reason = ("this host booted in legacy BIOS mode: it boots through GRUB, "
                            "and beadm manages systemd-boot (UEFI) hosts only")
            return self._reason
        with self.inner.host.session() as s:
            for esp in s.esps():
                if esp.store is None:
                    continue
                kind = esp_kind(esp.store.root)
                if kind == GRUB:
                    self._reason = (f"ESP {esp.uuid} is a GRUB ESP ({GRUB_MARK}): this host "
                                    "boots through GRUB, and beadm manages systemd-boot hosts only")
                    break
                if kind == EMPTY:
                    self._reason = (f"ESP {esp.uuid} has no boot loader (neither EFI/systemd/ "
                                    "nor loader/): run 'proxmox-boot-tool reinit' first")
                    break
        return self._reason

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
        return self.inner.boot_state(bes)

    def init(self, be: BeRef) -> None:
        self.preflight()
        self.inner.init(be)

    def post_create(self, be: BeRef) -> None:
        self.preflight()
        self.inner.post_create(be)

    def activate(self, be: BeRef, *, temporary: bool) -> None:
        self.preflight()
        self.inner.activate(be, temporary=temporary)

    def check_rename(self, old: BeRef, new: BeRef) -> None:
        self.preflight()
        self.inner.check_rename(old, new)

    def post_rename(self, old: BeRef, new: BeRef) -> None:
        self.preflight()
        self.inner.post_rename(old, new)

    def post_destroy(self, be: BeRef) -> None:
        self.preflight()
        self.inner.post_destroy(be)

    def check(self, bes: list[BeRef]) -> list[str]:
        why = self.reason()
        if why is not None:
            return [why]
        return self.inner.check(bes)

    def sync(self, bes: list[BeRef], *, only_if_used: bool = False) -> None:
        if only_if_used and self.reason() is not None:
            return  # the hooks on a host beadm does not manage: nothing to do, quietly
        self.preflight()
        self.inner.sync(bes, only_if_used=only_if_used)

    def migrate(self, bes: list[BeRef]) -> None:
        self.preflight()
        self.inner.migrate(bes)

    # -- trial boots (optional hooks, looked up by the BE library) -----------------------
    def activate_trial(self, be: BeRef, fallback: BeRef, tries: int,
                       watchdog: int = wd.DEFAULT) -> None:
        self.preflight()
        self.inner.activate_trial(be, fallback, tries, watchdog)

    def end_trial(self, bes: list[BeRef]) -> None:
        self.preflight()
        self.inner.end_trial(bes)

    def trial_state(self, bes: list[BeRef]) -> Trial | None:
        if self.reason() is not None:
            return None
        return self.inner.trial_state(bes)

    def esp_usage(self, bes: list[BeRef]) -> tuple[EspUsage, ...] | None:
        if self.reason() is not None:
            return None
        return self.inner.esp_usage(bes)
