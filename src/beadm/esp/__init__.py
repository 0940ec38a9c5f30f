"""What both ESP backends (systemd-boot, GRUB) share: BEs booted from every Proxmox ESP.

Each ESP (FAT, listed in ``/etc/kernel/proxmox-boot-uuids``) keeps beadm's kernels and
initrds once per content under ``beadm/``. Imports neither :mod:`beadm.sdboot` nor
:mod:`beadm.grub`.
Modules: :mod:`.backend` (the shared base of both backends), :mod:`.host` (mounting, private
mount namespace), :mod:`.store` (one ESP as a plain directory), :mod:`.esplist`,
:mod:`.kernels`, :mod:`.cmdline`, :mod:`.hooks` (kernel and initramfs hook scripts),
:mod:`.persist`, :mod:`.entries` (entry files), :mod:`.loaderconf`, :mod:`.efivars`.
"""
