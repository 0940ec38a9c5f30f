"""What both ESP backends (systemd-boot, GRUB) share: BEs booted from every Proxmox ESP.

Each ESP (FAT, listed in ``/etc/kernel/proxmox-boot-uuids``) keeps beadm's kernels and
initrds once per content under ``beadm/``. Imports neither :mod:`beadm.sdboot` nor
:mod:`beadm.grub`.
Modules: :mod:`.backend` (the shared base of both backends), :mod:`.plan` (a BE's plan),
:mod:`.notes` (a hook call's warnings), :mod:`.room` (fitting plans on tight ESPs, a rename's
room, each ESP's usage), :mod:`.drift` (the per-BE half of check and sync), :mod:`.fallback`
(Proxmox's entries after a BE is gone), :mod:`.host` (sessions and ESP mounts),
:mod:`.namespace` (the private mount namespace), :mod:`.dirhost` (the host over directories,
for tests), :mod:`.store` (one ESP as a plain directory), :mod:`.esplist`, :mod:`.kernels`,
:mod:`.cmdline`, :mod:`.hooks` (kernel and initramfs hook scripts), :mod:`.persist`,
:mod:`.entries` (entry files), :mod:`.loaderconf`, :mod:`.efivars`.
"""
