"""Issue 3, scenario h: a BE created from a snapshot taken before a kernel update boots that
older kernel and its own modules.

The machine runs an older kernel (OLD) and has the lab image's kernel (NEW) staged as a pending
update (lab/README.md, `pvelab-kernel-update`). Every step prints ``KERNEL=<uname -r>`` and
``NEW=<the update's version>`` so the host can compare the boots."""

from __future__ import annotations

import re

import pytest
from pvelab import run_steps
from scenario import ok, steps

pytestmark = pytest.mark.boot

PENDING = "/var/cache/pvelab/kernel-update/kver"

# with both ESPs mounted (on_esps): OLD NEW
ESP_CHECK = r"""
cat > /run/esps.sh <<'EOF'
set -eu
old=$1 new=$2
for e in /run/t/esp1 /run/t/esp2; do
    d=$e/loader/entries
    echo "$e: $(cd "$d" && echo *)"
    test "$(cd "$d" && echo beadm-old-*.conf)" = "beadm-old-$old.conf"
    test -f "$d/beadm-pve-1-$new.conf"
    test -f "$d/beadm-pve-1-$old.conf"
    grep -qx "version $old" "$d/beadm-old-$old.conf"
    grep -q "root=ZFS=rpool/ROOT/old " "$d/beadm-old-$old.conf"
    cmp "$e$(awk '$1 == "linux" { print $2 }' "$d/beadm-old-$old.conf")" "/boot/vmlinuz-$old"
    cmp "$e$(awk '$1 == "linux" { print $2 }' "$d/beadm-pve-1-$new.conf")" "/boot/vmlinuz-$new"
done
EOF
"""

# the running kernel's zfs module is the one in this BE's /lib/modules/$(uname -r)
OWN_MODULES = r"""
K=$(uname -r)
echo "KERNEL=$K"
echo "NEW=$(cat PENDING)"
echo "modules: $(ls /lib/modules)"
test -d "/lib/modules/$K"
case "$(modinfo -n zfs)" in "/lib/modules/$K/"*) ;; *) echo "zfs.ko not under $K"; exit 1;; esac
test "$(cat /sys/module/zfs/srcversion)" = "$(modinfo -F srcversion zfs)"
""".replace("PENDING", PENDING)


def kernels_of(output: str) -> tuple[str, str]:
    """(KERNEL, NEW) printed by a step."""
    found = dict(re.findall(r"^(KERNEL|NEW)=(\S+)$", output, re.M))
    return found.get("KERNEL", ""), found.get("NEW", "")


def test_h_be_from_snapshot_before_kernel_update_boots_older_kernel() -> None:
    res = run_steps(*steps(
        ESP_CHECK + OWN_MODULES + """
OLD=$K NEW=$(cat PENDING)
test "$OLD" != "$NEW"
test "$(ls /boot | grep vmlinuz-)" = "vmlinuz-$OLD"
beadm init pve-1
beadm create pve-1@pre-update
pvelab-kernel-update | tee /run/update.out
test "$(tail -n 1 /run/update.out)" = "$NEW"
ls -l /boot
test -f "/boot/vmlinuz-$OLD" -a -f "/boot/initrd.img-$OLD"
test -f "/boot/vmlinuz-$NEW" -a -f "/boot/initrd.img-$NEW"
case "$(modinfo -k "$NEW" -n zfs)" in "/lib/modules/$NEW/"*) ;; *) exit 1;; esac
beadm create -e pve-1@pre-update old
beadm list
on_esps "sh /run/esps.sh $OLD $NEW"
beadm activate old
test "$(flags old)" = R
""".replace("PENDING", PENDING),
        OWN_MODULES + """
root_is rpool/ROOT/old
test "$K" != "$(cat PENDING)"
test "$(ls /boot | grep vmlinuz-)" = "vmlinuz-$K"
test "$(ls /lib/modules)" = "$K"
beadm list
beadm check
beadm activate pve-1
""".replace("PENDING", PENDING),
        OWN_MODULES + """
root_is rpool/ROOT/pve-1
test "$K" = "$(cat PENDING)"
beadm list
beadm check
# issue 11.4: Proxmox's one-boot kernel pin on the older kernel, no terminal (no refresh):
# beadm's shutdown re-assert reads it, the next boot runs that kernel
OLD_K=$(ls /boot | sed -n 's/^vmlinuz-//p' | grep -vxF "$K")
test -n "$OLD_K"
beadm_as_on_a_host
proxmox-boot-tool kernel pin "$OLD_K" --next-boot
test "$(cat /etc/kernel/next-boot-pin)" = "$OLD_K"
# list and check show the pin (notes on stderr)
beadm list 2>&1 >/dev/null | grep -F "BE pve-1 boots kernel $OLD_K: pinned for the next boot only"
beadm list --json | python3 -c 'import json, sys; b = json.load(sys.stdin)["bes"]; \
    p = [x["kernel_pin"] for x in b if x["name"] == "pve-1"][0]; \
    assert p == {"kver": sys.argv[1], "next_boot_only": True, "present": True}, p' "$OLD_K"
# check notes the pin (and exits 1: the default on the ESPs moves to it only at the next
# sync, here the shutdown re-assert)
{ beadm check 2>&1 || true; } | grep -F "beadm: note: BE pve-1 boots kernel $OLD_K"
""".replace("PENDING", PENDING),
        OWN_MODULES + """
root_is rpool/ROOT/pve-1
test "$K" != "$(cat PENDING)"
test ! -e /etc/kernel/next-boot-pin   # proxmox-boot-cleanup.service dropped the served pin
beadm list
""".replace("PENDING", PENDING),
    ), timeout=1500)
    ok(res)
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/old"] + ["rpool/ROOT/pve-1"] * 2
    (old, new), (k2, new2), (k3, new3), (k4, new4) = (kernels_of(res.steps[k])
                                                      for k in (1, 2, 3, 4))
    assert old and new and old != new
    assert (k2, new2) == (old, new), "BE old did not boot the kernel from before the update"
    assert (k3, new3) == (new, new), "pve-1 did not boot the updated kernel"
    assert res.entries[1] == f"beadm-old-{old}.conf"
    assert res.entries[2] == f"beadm-pve-1-{new}.conf"
    assert (k4, new4) == (old, new), "the next-boot pin did not boot the pinned kernel"
    assert res.entries[3] == f"beadm-pve-1-{old}.conf"
