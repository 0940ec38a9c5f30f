"""Issue 12, items 1 and 2, proven by booting: guest configurations survive a rollback once
``beadm init --shared-state`` has moved pmxcfs's database out of the BE, and a BE cloned from a
snapshot taken before that move boots with the shared state, not its own stale copy.

The machine has no Proxmox: step 1 installs a stand-in for pmxcfs from the checkout
(``lab/standins/pvelab-pmxcfs``): ``pve-cluster.service`` with the ordering of Proxmox's unit
(no default dependencies: nothing orders it after the pool's file systems), serving ``/etc/pve``
from ``/var/lib/pve-cluster/config.db`` in WAL mode.

Three boots: pve-1 (install, snapshot ``pve-1@old``, guest 101, the move, ``create -e
pve-1@old pve-2``), pve-2 (the shared guests, not its own copy; guest 100 defined), pve-1 again
(guest 100 is there; after ``destroy pve-2`` too)."""

from __future__ import annotations

import pytest
from pvelab import run_steps
from scenario import ok, steps

pytestmark = pytest.mark.boot

# in every step: the drop-in beadm writes as $DI, and the command that failed, if one did
DI = """
DI=/etc/systemd/system/pve-cluster.service.d/beadm-shared-state.conf
trap 'echo "FAILED line $LINENO: $BASH_COMMAND"' ERR
"""

# pve-cluster runs on the shared dataset, and was started after it was mounted
ORDERED = r"""
test "$(findmnt -no SOURCE -T /var/lib/pve-cluster)" = rpool/var-lib-pve-cluster
test -f "$DI"
systemctl show -p After -p RequiresMountsFor pve-cluster.service
systemctl show -p After --value pve-cluster.service | tr ' ' '\n' | grep -qx zfs-mount.service
systemctl show -p RequiresMountsFor --value pve-cluster.service | grep -qw /var/lib/pve-cluster
systemctl is-active pve-cluster.service
mounted=$(systemctl show -p ActiveEnterTimestampMonotonic --value zfs-mount.service)
started=$(systemctl show -p InactiveExitTimestampMonotonic --value pve-cluster.service)
echo "ORDER zfs-mount active at ${mounted}us, pve-cluster started at ${started}us"
if [ "$mounted" -eq 0 ] || [ "$started" -lt "$mounted" ]; then
    echo "pve-cluster started before the pool's datasets were mounted"; exit 1; fi
journalctl -b -o short-monotonic --no-pager -u zfs-mount.service -u pve-cluster.service | tail -n 8
findmnt -no SOURCE,FSTYPE /etc/pve
"""


def test_guests_survive_a_rollback_and_a_be_from_before_the_move_uses_the_shared_state() -> None:
    res = run_steps(*steps(
        DI + """
root_is rpool/ROOT/pve-1
/src/lab/standins/pvelab-pmxcfs install
systemctl is-active pve-cluster.service
test "$(findmnt -no FSTYPE /etc/pve)" = tmpfs
mkdir -p /etc/pve/qemu-server
echo 'name: vm99' > /etc/pve/qemu-server/99.conf
pmxcfs wait qemu-server/99.conf
beadm init pve-1 2>&1 | tee /tmp/init.out
grep -q '/var/lib/pve-cluster would go back in time with the BE' /tmp/init.out
beadm create pve-1@old                      # before the move: its own config.db, no drop-in
echo 'name: vm101' > /etc/pve/qemu-server/101.conf   # only in the state that moves
pmxcfs wait qemu-server/101.conf
beadm -n init --shared-state | tee /tmp/dry.out
grep -q '^would run: zfs create .* rpool/var-lib-pve-cluster$' /tmp/dry.out
grep -qx "would write $DI" /tmp/dry.out
if zfs list rpool/var-lib-pve-cluster 2>/dev/null; then echo "the dry run made it"; exit 1; fi
if [ -e "$DI" ]; then echo "the dry run wrote the drop-in"; exit 1; fi
test "$(findmnt -no SOURCE -T /var/lib/pve-cluster)" = rpool/ROOT/pve-1
beadm init --shared-state
test "$(findmnt -no SOURCE -T /var/lib/pve-cluster)" = rpool/var-lib-pve-cluster
test -f "$DI"
systemctl is-active pve-cluster.service
test "$(cat /etc/pve/qemu-server/101.conf)" = 'name: vm101'
pmxcfs list
beadm create -e pve-1@old pve-2 2>&1 | tee /tmp/create.out
grep -q 'warning: BE pve-2 keeps its own /var/lib/pve-cluster from before' /tmp/create.out
d=$(beadm mount pve-2)
test -f "$d/var/lib/pve-cluster/config.db"   # its own, stale copy (hidden at boot)
cat "$d$DI"
grep -qx 'RequiresMountsFor=/var/lib/pve-cluster' "$d$DI"
beadm umount pve-2
beadm activate pve-2 2>&1 | tee /tmp/activate.out
if grep -q "keeps its own" /tmp/activate.out; then echo "warned twice"; exit 1; fi
beadm list
""",
        DI + ORDERED + """
root_is rpool/ROOT/pve-2
# the shared state, not pve-2's own copy from the snapshot (which has no vm101)
test "$(cat /etc/pve/qemu-server/101.conf)" = 'name: vm101'
test "$(cat /etc/pve/qemu-server/99.conf)" = 'name: vm99'
echo 'name: vm100' > /etc/pve/qemu-server/100.conf
pmxcfs wait qemu-server/100.conf
beadm activate pve-1
""",
        DI + ORDERED + """
root_is rpool/ROOT/pve-1
test "$(cat /etc/pve/qemu-server/100.conf)" = 'name: vm100'
test "$(pmxcfs get qemu-server/100.conf)" = 'name: vm100'
beadm destroy -F pve-2
systemctl restart pve-cluster.service     # read config.db again
test "$(cat /etc/pve/qemu-server/100.conf)" = 'name: vm100'
test "$(cat /etc/pve/qemu-server/101.conf)" = 'name: vm101'
pmxcfs list
beadm list
""",
    ))
    ok(res)
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/pve-2", "rpool/ROOT/pve-1"]
    for k in (2, 3):
        assert "ORDER zfs-mount active at" in res.steps[k], res.steps.get(k)
