"""The hook scripts beadm installs into a BE (the same text as ``hooks/`` in the source).

Proxmox's ``zz-proxmox-boot`` (kernel postinst/postrm) and ``proxmox-boot-sync``
(initramfs post-update) rewrite every ESP's ``loader.conf`` ``default`` line. run-parts
runs hooks in name order, so ``zzz-beadm`` runs after them and re-asserts beadm's
choice (``beadm sync``: entries for new kernels, the activated BE as default, garbage
collection). A failing sync never fails the package operation; it says what to run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from beadm import confined

NAME = "zzz-beadm"
SCRIPT = """\
#!/bin/sh
# zzz-beadm: installed by beadm (boot environments). Runs after Proxmox's boot hooks
# (zz-proxmox-boot, proxmox-boot-sync), which rewrite loader.conf on every ESP, and
# re-asserts the boot environment beadm activated, with entries for new kernels.
if command -v systemd-detect-virt >/dev/null 2>&1 && systemd-detect-virt --quiet --container
then
    exit 0  # Proxmox's hook does nothing in a container; neither do we
fi
[ -s /etc/kernel/proxmox-boot-uuids ] || [ -s /etc/kernel/pve-efiboot-uuids ] || exit 0
command -v beadm >/dev/null 2>&1 || exit 0
# beadm sync waits (up to 30 min, saying so) while another beadm command runs
if ! beadm sync --if-used >/dev/null; then
    echo "zzz-beadm: 'beadm sync' did not complete: boot entries of the new kernel or" \\
        "initrd may be missing or stale; run 'beadm sync'" >&2
fi
exit 0
"""
# where each copy goes, relative to a BE's root
TARGETS = (
    "etc/kernel/postinst.d",
    "etc/kernel/postrm.d",
    "etc/initramfs/post-update.d",
)


def install(root: Path, *, dry_run: bool = False, out: TextIO | None = None) -> None:
    """Install the hook into the BE tree at ``root`` (idempotent; inside the BE only,
    :mod:`beadm.confined`: a link on the way is refused, not followed)."""
    for rel in TARGETS:
        path = f"{rel}/{NAME}"
        try:
            if confined.read_text(root, path, errors="replace") == SCRIPT \
                    and confined.stat(root, path).st_mode & 0o111:
                continue
        except OSError:
            pass
        if dry_run:
            print(f"would install {root / path}", file=out if out is not None else sys.stdout)
            continue
        confined.write_file(root, path, SCRIPT.encode("utf-8"), mode=0o755, fsync=False)
