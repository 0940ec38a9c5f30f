"""A BE's plan: what it needs on every ESP (its kernels, its command line, its pin)."""

from __future__ import annotations

from pathlib import Path

from beadm.backend import BeRef
from beadm.esp import entries as ent
from beadm.esp import kernels
from beadm.record import record, replace


@record
class Plan:
    """What a BE needs on every ESP: its entries (file name -> content, newest first)."""

    be: BeRef
    options: str
    kernels: tuple[kernels.Kernel, ...]
    pin: str | None = None  # Proxmox's kernel pin in the BE, when it has that kernel
    running_kver: str | None = None  # the kernel running now, when this is the running BE

    @property
    def default_kver(self) -> str:
        return self.pin or self.kernels[0].kver

    def lean(self) -> Plan:
        """The same BE on tight ESPs: only the kernel it boots, and the running BE also the
        kernel running now (known to boot)."""
        keep = [k for k in self.kernels if k.kver in (self.default_kver, self.running_kver)]
        return replace(self, kernels=tuple(keep))

    def files(self) -> list[tuple[Path, str]]:
        """(source, basename) of every kernel and initrd the plan stores."""
        return [(f, f"{kind}-{k.kver}") for k in self.kernels
                for f, kind in ((k.vmlinuz, "vmlinuz"), (k.initrd, "initrd.img"))]

    @property
    def default_id(self) -> str:
        """The entry the BE boots: its pinned kernel's (``proxmox-boot-tool kernel pin``,
        also ``--next-boot``), else its newest kernel's."""
        return ent.entry_filename(self.be.name, self.default_kver)

    def fnames(self) -> list[str]:
        return [ent.entry_filename(self.be.name, k.kver) for k in self.kernels]
