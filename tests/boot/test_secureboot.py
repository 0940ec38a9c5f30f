"""Issue 14 item 2: a BE created, activated and booted with Secure Boot on. The Secure Boot
machine (``lab/pvelab run --secureboot``; lab/machine/install-secureboot): OVMF's Secure Boot
firmware with Microsoft's keys enrolled, Debian's signed shim and GRUB on both ESPs in Proxmox's
GRUB mode, Debian's signed kernel, and the zfs modules signed with the machine's own key, whose
cert is in the firmware's MokList. Three boots: Proxmox's entry as installed (init, create,
activate); the new BE from beadm's entry (a refresh from it, then a one-shot back, which GRUB
reads from grubenv); the one-shot BE, with grubenv's ``next_entry`` cleared by GRUB itself.

The ``entry`` of a boot is the kernel GRUB loaded (BOOT_IMAGE): ``/vmlinuz-*`` is Proxmox's own
entry at the ESP root, ``/beadm/*`` one of beadm's entries in custom.cfg."""

from __future__ import annotations

import pytest
from pvelab import GRUB_LIB, run_steps

pytestmark = pytest.mark.boot

LIB = GRUB_LIB + r"""
secure() {  # Secure Boot is on, the kernel is locked down, and zfs.ko was checked by it
    mokutil --sb-state | tee /dev/stderr | grep -qx 'SecureBoot enabled'
    grep -q '\[integrity\]' /sys/kernel/security/lockdown
    modinfo -F signer zfs | grep -qx 'beadm lab module signing key'
    test -e /sys/module/zfs
    # taint E (8192): an unsigned module was loaded (zfs taints P and O, CDDL out of tree)
    (( ($(cat /proc/sys/kernel/tainted) & 8192) == 0 )) || { echo "unsigned module"; exit 1; }
}
"""


def test_secure_boot_be_created_activated_booted_and_one_shot_back() -> None:
    res = run_steps(
        LIB + """
root_is rpool/ROOT/pve-1
secure
test ! -e /etc/kernel/cmdline
proxmox-boot-tool status | tee /dev/stderr | grep -q 'C0DE-0002 is configured with: grub'
beadm init pve-1
beadm create pve-2
beadm activate pve-2
test "$(flags pve-2)" = R
beadm check
""",
        LIB + """
root_is rpool/ROOT/pve-2
secure
grep -q 'root=ZFS=rpool/ROOT/pve-2 ' /etc/default/grub.d/zfs.cfg
proxmox-boot-tool refresh
on_esps 'grep -q "root=ZFS=rpool/ROOT/pve-2" /run/t/esp1/grub/grub.cfg'
beadm check
beadm activate -t pve-1
test "$(flags pve-1)" = T
on_esps 'grep -x "next_entry=beadm-pve-1-.*" /run/t/esp1/grub/grubenv /run/t/esp2/grub/grubenv'
""",
        LIB + """
root_is rpool/ROOT/pve-1
secure
test "$(flags pve-2)" = R
# GRUB, signed and locked down, read next_entry and cleared it on the ESP it booted from
on_esps '! grep -q "^next_entry=." /run/t/esp1/grub/grubenv'
beadm check
""",
        timeout=1500, secureboot=True)
    assert res.returncode == 0, res.output
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/pve-2", "rpool/ROOT/pve-1"]
    assert res.entries[0].startswith("/vmlinuz-"), res.entries  # Proxmox's entry, as installed
    assert all(e.startswith("/beadm/") for e in res.entries[1:]), res.entries
