"""The GRUB backend: BEs booted by GRUB from every Proxmox ESP (legacy BIOS, or shim + GRUB).

Layout on each ESP (FAT, listed in ``/etc/kernel/proxmox-boot-uuids``; facts in
``lab/GRUB-FACTS.md``)::

    beadm/<sha256[:16]>-vmlinuz-<kver>       kernel, stored once per content (as systemd-boot)
    beadm/<sha256[:16]>-initrd.img-<kver>    initrd
    grub/custom.cfg                          beadm's menu entries and ``set default``
    grub/grubenv                             ``next_entry`` for ``activate -t``

``grub/grub.cfg`` is Proxmox's (``proxmox-boot-tool refresh`` = ``update-grub`` with the ESP
on /boot, from whichever BE runs it); Debian's ``41_custom`` makes every such grub.cfg source
``custom.cfg`` next to it, after its own entries, so beadm's entries and default survive every
regeneration. Nothing is written at the ESP root, under ``EFI/`` or into grub.cfg.
Modules: :mod:`.grubenv` (the 1024-byte environment block), :mod:`.menu` (custom.cfg),
:mod:`.zfscfg` (each BE's ``/etc/default/grub.d/zfs.cfg``), :mod:`.espfiles` (GRUB's files
on one ESP), :mod:`.check` (its drift on one ESP), :mod:`.backend` (the hooks); the room,
fallback and drift logic it shares with systemd-boot is in :mod:`beadm.esp`.
"""
