"""Issue 14: the GRUB backend's claims proven by rebooting the legacy-BIOS machine (SeaBIOS,
GRUB i386-pc on both disks, its files and the kernels on the ESPs, as the fixture's GRUB mode
lays them out; ``lab/pvelab run --legacy``) and the Secure Boot machine (UEFI, shim + signed
GRUB; ``--secureboot``). One machine, four boots, to keep VM time small: a (boots as
installed, init keeps it booting), b (create + activate), c (survives ``proxmox-boot-tool
refresh`` and a manual ``update-grub`` run from the new BE), d (one-shot, then back), e (rename
of an inactive BE), f (destroy from the new BE frees its files).

The ``entry`` of a boot is the kernel GRUB loaded (BOOT_IMAGE): ``/vmlinuz-*`` is Proxmox's own
entry at the ESP root, ``/beadm/*`` one of beadm's entries in custom.cfg."""

from __future__ import annotations

import pytest
from pvelab import CRASH_AFTER, GRUB_LIB, run_steps

pytestmark = pytest.mark.boot

LIB = GRUB_LIB


# Secure Boot machine: Secure Boot is on, the kernel is locked down, and the zfs.ko it runs
# was signed by the machine's key (its cert reached the kernel through shim's MOK list)
SECURE = r"""
mokutil --sb-state | tee /dev/stderr | grep -qx 'SecureBoot enabled'
grep -q '\[integrity\]' /sys/kernel/security/lockdown
modinfo -F signer zfs | grep -qx 'beadm lab module signing key'
test -e /sys/module/zfs
# taint E (8192): an unsigned module was loaded (zfs taints P and O: CDDL, out of tree)
(( ($(cat /proc/sys/kernel/tainted) & 8192) == 0 )) || { echo "unsigned module"; exit 1; }
"""


def grub_a_to_f(secureboot: bool) -> None:
    """Scenarios a-f in one machine, four boots: the legacy-BIOS one, or (``secureboot``)
    the Secure Boot one, where every step first checks that Secure Boot is on."""
    lib = LIB + (SECURE if secureboot else "")
    firmware = ("test -d /sys/firmware/efi" if secureboot else "test ! -d /sys/firmware/efi")
    res = run_steps(
        lib + firmware + """
root_is rpool/ROOT/pve-1
test ! -e /etc/kernel/cmdline
proxmox-boot-tool status | tee /dev/stderr | grep -q 'C0DE-0002 is configured with: grub'
beadm init pve-1
grep -q '^root=ZFS=rpool/ROOT/pve-1 ' /etc/kernel/cmdline
on_esps 'grep -c "^menuentry" /run/t/esp1/grub/custom.cfg /run/t/esp2/grub/custom.cfg'
test "$(flags pve-1)" = NR
beadm create pve-2
beadm create pve-x
beadm rename pve-x pve-3
on_esps '! grep -q "beadm-pve-x-" /run/t/esp1/grub/custom.cfg'
beadm activate pve-2
test "$(flags pve-2)" = R
beadm check
""",
        lib + """
root_is rpool/ROOT/pve-2
grep -q '^root=ZFS=rpool/ROOT/pve-2 ' /etc/kernel/cmdline
grep -q 'root=ZFS=rpool/ROOT/pve-2 ' /etc/default/grub.d/zfs.cfg
test "$(flags pve-2)" = NR
beadm check
proxmox-boot-tool refresh
update-grub
on_esps 'grep -q "root=ZFS=rpool/ROOT/pve-2" /run/t/esp1/grub/grub.cfg'
test "$(flags pve-2)" = NR
beadm check
beadm activate -t pve-3
test "$(flags pve-3)" = T
on_esps 'grep -x "next_entry=beadm-pve-3-.*" /run/t/esp1/grub/grubenv /run/t/esp2/grub/grubenv'
""",
        lib + """
root_is rpool/ROOT/pve-3
test "$(flags pve-2)" = R
# GRUB read next_entry and cleared it on the ESP it booted from (disk 1)
on_esps '! grep -q "^next_entry=." /run/t/esp1/grub/grubenv'
""",
        lib + """
root_is rpool/ROOT/pve-2
beadm sync
beadm destroy -F pve-3
on_esps '! grep -q "beadm-pve-3-" /run/t/esp1/grub/custom.cfg /run/t/esp2/grub/custom.cfg'
beadm check
beadm list
""",
        timeout=1500, legacy=not secureboot, secureboot=secureboot)
    assert res.returncode == 0, res.output
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/pve-2", "rpool/ROOT/pve-3",
                         "rpool/ROOT/pve-2"]
    assert res.entries[0].startswith("/vmlinuz-"), res.entries  # Proxmox's entry, as installed
    assert all(e.startswith("/beadm/") for e in res.entries[1:]), res.entries


def test_grub_a_b_c_d_e_f_on_the_legacy_bios_machine() -> None:
    grub_a_to_f(secureboot=False)


def test_grub_a_b_c_d_e_f_with_secure_boot_on() -> None:
    """Issue 14 item 2: OVMF's Secure Boot firmware with Microsoft's keys, shim + Debian's
    signed GRUB on both ESPs (``proxmox-boot-tool init <ESP> grub``), Debian's signed kernel,
    zfs modules signed with a key enrolled in the firmware's MOK list (``lab/pvelab run
    --secureboot``; lab/machine/install-secureboot)."""
    grub_a_to_f(secureboot=True)


def test_grub_i_power_off_during_activate_and_create_on_the_legacy_bios_machine() -> None:
    """Scenario i with GRUB: power off while activate has both ESPs mounted read-write (custom.cfg
    and grubenv being written), and while create copies the new BE's kernels to the first
    ESP; the next boot is a consistent BE, ``sync`` + ``check`` pass, no temporary is left."""
    res = run_steps(
        LIB + CRASH_AFTER + """
beadm init pve-1
beadm create pve-2
beadm -v activate pve-2 > /run/activate.log 2>&1 &
crash_after 2 "run: mount -t vfat" /run/activate.log
""",
        LIB + CRASH_AFTER + """
r=$(findmnt -no SOURCE /)
echo "booted $r"
case "$r" in rpool/ROOT/pve-1|rpool/ROOT/pve-2) ;; *) echo "not a consistent BE"; exit 1;; esac
beadm list
beadm sync
beadm check
beadm activate pve-2
beadm -v create pve-3 > /run/create.log 2>&1 &
crash_after 1 "run: mount -t vfat" /run/create.log
""",
        LIB + """
root_is rpool/ROOT/pve-2
beadm list
beadm sync
beadm check
zfs list -H -o name -r rpool/ROOT
on_esps '! ls -d /run/t/esp*/beadm/.beadm-tmp* /run/t/esp*/grub/.beadm-tmp* 2>/dev/null'
if zfs list rpool/ROOT/pve-3 >/dev/null 2>&1; then
    test "$(flags pve-3)" = ""   # a whole BE, bootable (check passed), not active
    on_esps 'grep -q "beadm-pve-3-" /run/t/esp1/grub/custom.cfg &&
        grep -q "beadm-pve-3-" /run/t/esp2/grub/custom.cfg'
fi
""",
        timeout=1200, legacy=True)
    assert res.returncode == 0, res.output
    assert res.roots[1] in ("rpool/ROOT/pve-1", "rpool/ROOT/pve-2"), res.roots
    assert res.roots[2] == "rpool/ROOT/pve-2", res.roots
