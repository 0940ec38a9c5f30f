"""Proxmox's own entries after a BE is gone, for every loader.

Proxmox's entries (systemd-boot's ``proxmox-<kver>.conf``, GRUB's ``grub.cfg``: the fallback
when no beadm default holds, an NVRAM reset, a ``reinit``) carry the ``root=`` of whichever
BE ran ``proxmox-boot-tool refresh`` last. When that BE is gone (destroyed, renamed), the
refresh is run again from the running BE, whose cmdline beadm keeps right, so that they boot
an existing BE again. Which ESPs need it is the loader's to say.
"""

from __future__ import annotations

import logging

from beadm.errors import BeadmError
from beadm.esp.host import Host
from beadm.esp.notes import Notes
from beadm.runner import Runner

log = logging.getLogger(__name__)
REFRESH = ["proxmox-boot-tool", "refresh"]


def refresh(runner: Runner, host: Host, note: str, notes: Notes) -> bool:
    """Run the refresh from the running BE (``note``: what the fallback boots now). A
    refresh that fails (a full ESP) is a warning in ``notes``: the destroy or rename
    stands. False in a dry run (nothing was refreshed: nothing to put back after it)."""
    if runner.dry_run:
        runner.run(REFRESH)
        return False
    host.release()  # the refresh mounts the ESPs itself, in the host's namespace
    log.warning("%s: running proxmox-boot-tool refresh from the running BE", note)
    try:
        runner.run(REFRESH)
    except BeadmError as exc:
        notes.add(f"{note}; 'proxmox-boot-tool refresh' failed ({exc}): "
                  "run it yourself once the cause is fixed")
    return True
