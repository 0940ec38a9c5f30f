"""The systemd-boot backend: BEs booted by systemd-boot from every Proxmox ESP.

Layout on each ESP (FAT, listed in ``/etc/kernel/proxmox-boot-uuids``)::

    beadm/<sha256[:16]>-vmlinuz-<kver>       kernel, stored once per content
    beadm/<sha256[:16]>-initrd.img-<kver>    initrd, stored once per content
    loader/entries/beadm-<be>-<kver>.conf    one entry per BE and kernel (name lowercased)
    loader/loader.conf                       ``default`` line (re-asserted after Proxmox's tools)

Nothing is ever written under ``EFI/proxmox/`` or named ``proxmox-*``/``auto-*``.
Modules: :mod:`.entries` (entry files), :mod:`.loaderconf`, :mod:`.cmdline`,
:mod:`.efivars`, :mod:`.store` (one ESP as a plain directory), :mod:`.kernels`,
:mod:`.resolve` (which entry systemd-boot picks), :mod:`.host` (mounting, private mount
namespace), :mod:`.hooks` (kernel and initramfs hook scripts), :mod:`.backend`.
"""
