"""The systemd-boot backend: BEs booted by systemd-boot from every Proxmox ESP.

Layout on each ESP (FAT, listed in ``/etc/kernel/proxmox-boot-uuids``)::

    beadm/<sha256[:16]>-vmlinuz-<kver>       kernel, stored once per content
    beadm/<sha256[:16]>-initrd.img-<kver>    initrd, stored once per content
    loader/entries/beadm-<be>-<kver>.conf    one entry per BE and kernel (name lowercased)
    loader/loader.conf                       ``default`` line (re-asserted after Proxmox's tools)

Nothing is ever written under ``EFI/proxmox/`` or named ``proxmox-*``/``auto-*``.
Modules: :mod:`.resolve` (which entry systemd-boot picks), :mod:`.trial` (trial boot names),
:mod:`.base` (the building blocks of the hooks), :mod:`.backend` (create, activate, rename,
destroy, sync), :mod:`.check`, :mod:`.bootstate`, :mod:`.trialhooks`, :mod:`.migrate` (from
the old shell beadm); what it shares with GRUB (the ESPs, the kernel store, entries,
``loader.conf``, EFI variables, the room, fallback and drift logic) is :mod:`beadm.esp`.
"""
