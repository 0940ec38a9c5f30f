"""The explicit registry of bootloader backends (name -> factory) and the ``auto`` choice.

``auto``: ``none`` where no proxmox-boot uuids file exists; else the choice of
:mod:`beadm.detect`: systemd-boot when every listed ESP is a systemd-boot ESP and the
host booted in UEFI mode, GRUB when every ESP boots GRUB (``EFI/proxmox/grubx64.efi``, or a
legacy-BIOS boot with ``grub/`` on the ESPs), and a refusal of every boot-changing command
(exit 7, with the reason) otherwise: a mixed host, an ESP without a boot loader.
``--backend systemd-boot`` and ``--backend grub`` name a backend explicitly, without the check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from beadm.backend import BackendFactory, BootBackend, NoopBackend
from beadm.errors import UnsupportedError, UsageError
from beadm.runner import Runner

if TYPE_CHECKING:
    from beadm.grub.backend import GrubBackend

#: Files whose presence means the host boots through proxmox-boot-tool's ESPs.
UUIDS_FILES = ("proxmox-boot-uuids", "pve-efiboot-uuids")
SDBOOT_MODULE = "beadm.sdboot.backend"


@contextlib.contextmanager
def _available(what: str) -> Iterator[None]:
    """Import a backend's modules: a missing one refuses (exit 7), it is no internal error."""
    try:
        yield
    except ImportError as exc:
        raise UnsupportedError(f"the {what} backend is not available") from exc


def _systemd_boot(runner: Runner) -> BootBackend:
    with _available("systemd-boot"):
        from beadm.sdboot.backend import SystemdBootBackend
    return SystemdBootBackend(runner)


def _grub(runner: Runner) -> BootBackend:
    with _available("GRUB"):
        from beadm.grub.backend import GrubBackend
    return GrubBackend(runner)


def _guarded_systemd_boot(runner: Runner, efi_dir: Path | None = None) -> BootBackend:
    with _available("systemd-boot"):
        from beadm.detect import EFI_DIR, GuardedBackend
        from beadm.sdboot.backend import SystemdBootBackend
    sdboot = SystemdBootBackend(runner)

    def grub() -> GrubBackend:
        """Built (and its modules imported) only where the guard finds GRUB ESPs; on the
        systemd-boot backend's host: one session (namespace, ESP and BE mounts) whichever
        backend the host needs."""
        with _available("GRUB"):
            from beadm.grub.backend import GrubBackend
        return GrubBackend(runner, host=sdboot.host)

    return GuardedBackend(sdboot, efi_dir=efi_dir if efi_dir is not None else EFI_DIR,
                          make_grub=grub)


def _none(runner: Runner) -> BootBackend:
    return NoopBackend(runner)


def backends() -> dict[str, BackendFactory]:
    """Every backend by name (a fresh mapping each call: no module-level state)."""
    return {"none": _none, "systemd-boot": _systemd_boot, "grub": _grub}


def sdboot_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(SDBOOT_MODULE) is not None
    except ImportError:
        return False


def auto_name(etc_kernel: Path = Path("/etc/kernel")) -> str:
    """``systemd-boot`` when a proxmox-boot uuids file exists (and the backend is there)."""
    if any((etc_kernel / f).exists() for f in UUIDS_FILES) and sdboot_available():
        return "systemd-boot"
    return "none"


def make_backend(
    name: str, runner: Runner, *, etc_kernel: Path = Path("/etc/kernel")
) -> BootBackend:
    """The backend called ``name`` (or the ``auto`` choice), built with ``runner``."""
    if name == "auto":
        name = auto_name(etc_kernel)
        if name == "systemd-boot":
            return _guarded_systemd_boot(runner)
    table = backends()
    if name not in table:
        raise UsageError(f"unknown backend {name!r} (choose from auto, {', '.join(table)})")
    return table[name](runner)
