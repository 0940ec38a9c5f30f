"""Proof that the Proxmox-like machine really boots (OVMF -> systemd-boot -> zfs initramfs ->
rpool/ROOT/pve-1), reboots, survives a proxmox-boot-tool refresh, a hard crash and a lost disk."""

from __future__ import annotations

from pvelab import run_steps

CHECK_ROOT = """
test "$(findmnt -no SOURCE /)" = rpool/ROOT/pve-1
test "$(cat /proc/1/comm)" = systemd
"""


def test_boots_twice_and_refresh_keeps_it_booting() -> None:
    step1 = CHECK_ROOT + """
cat /etc/kernel/proxmox-boot-uuids
test "$(cat /etc/kernel/proxmox-boot-uuids)" = "$(printf 'C0DE-0001\\nC0DE-0002')"
zpool status rpool
zfs list -o name,mountpoint,canmount -r rpool
test "$(zpool get -H -o value bootfs rpool)" = rpool/ROOT/pve-1
test "$(zfs get -H -o value canmount rpool/ROOT)" = off
proxmox-boot-tool refresh
proxmox-boot-tool status
echo "refresh done on $(uname -r)"
command -v beadm
"""
    result = run_steps(step1, CHECK_ROOT + "echo second boot ok")
    assert result.returncode == 0, result.result
    assert result.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/pve-1"]
    assert all(e.startswith("proxmox-") and e.endswith(".conf") for e in result.entries), \
        result.entries
    assert "C0DE-0001 is configured with: uefi" in result.steps[1]
    assert "C0DE-0002 is configured with: uefi" in result.steps[1]
    assert "refresh done" in result.steps[1]
    assert "/run/pvelab/bin/beadm" in result.steps[1]
    assert "second boot ok" in result.steps[2]


def test_crash_and_missing_disk() -> None:
    step1 = CHECK_ROOT + "pvelab-detach-disk 2\n"
    step2 = CHECK_ROOT + """
zpool status rpool
test "$(zpool list -H -o health rpool)" = DEGRADED
pvelab-crash
"""
    step3 = CHECK_ROOT + "zpool status rpool\necho after crash\n"
    result = run_steps(step1, step2, step3)
    assert result.returncode == 0, result.result
    assert result.roots == ["rpool/ROOT/pve-1"] * 3
    assert "DEGRADED" in result.steps[2]
    assert "after crash" in result.steps[3]
