"""Issue 11 item 1: no kernel update ever fails because of beadm, on 512 MiB ESPs with kernels
and initrds of Proxmox's sizes (one machine, three boots).

Sizes are emulated (nothing of Proxmox can be installed here): proxmox-boot-tool's facts say a
PVE kernel is ~14 MB and that Proxmox keeps 4-5 pairs on a 512 MiB ESP by itself, so a pair is
~100-128 MiB. Two older kept kernels are random bytes of such sizes (14 + 110 MiB), installed as
``proxmox-kernel-*`` stand-in packages so that the fixture keeps them (3 newest + running);
they are never booted. The update's initrd is built through initramfs-tools with a 40 MiB
incompressible file added by a hook (the machine's own initrd is ~13 MB).

Boot 1 (pve-1 on the machine's older kernel K1): Proxmox alone keeps K1 and both fakes; beadm
init + two more BEs; the pending kernel K2 installed with dpkg (hooks in the real order:
initramfs-tools, zz-proxmox-boot, zzz-beadm), then ``update-initramfs -u`` for it
(proxmox-boot-sync, zzz-beadm). Every step succeeds, and after each one every ESP keeps at
least Proxmox's largest kernel + initrd pair free (the next kernel fits): beadm stores the
lean set (the kernel each BE boots, and the running one) because the full set would not leave
that room. ESP bytes are printed before/after (``ESPBYTES``).
Boot 2: pve-1 runs K2 from beadm's entry; ``activate -t pve-2``. Boot 3: pve-2 on K1."""

from __future__ import annotations

import re

import pytest
from pvelab import run_steps
from scenario import ok, steps

pytestmark = pytest.mark.boot

PENDING = "/var/cache/pvelab/kernel-update/kver"

ROOM = r"""
# ESPBYTES <when> <esp> <used> <avail> <largest Proxmox pair>; fails when avail < that pair
esp_room() {
    on_esps 'for e in /run/t/esp1 /run/t/esp2; do
        pair=$(du -sb $e/EFI/proxmox/*/ 2>/dev/null | sort -n | tail -n 1 | cut -f1)
        set -- $(df -B1 --output=used,avail $e | tail -n 1)
        echo "ESPBYTES '"$1"' ${e#/run/t/} $1 $2 ${pair:-0}"
        if [ "$2" -lt "${pair:-0}" ]; then
            echo "$e: $2 bytes free, less than Proxmox s largest pair (${pair})"; exit 1
        fi
    done'
}
# a kept kernel of Proxmox's size that is never booted: random bytes + a stand-in package
fake_kernel() {
    local kver=$1 w
    head -c $((14 << 20)) /dev/urandom > "/boot/vmlinuz-$kver"
    head -c $((110 << 20)) /dev/urandom > "/boot/initrd.img-$kver"
    w=$(mktemp -d)
    mkdir "$w/DEBIAN"
    { echo "Package: proxmox-kernel-$kver"; echo "Version: 1"; echo "Architecture: all"
      echo "Maintainer: lab <root@localhost>"
      echo "Description: lab stand-in of a kept Proxmox kernel"; } > "$w/DEBIAN/control"
    dpkg-deb -b "$w" "/root/proxmox-kernel-$kver.deb" >/dev/null
    dpkg -i "/root/proxmox-kernel-$kver.deb" >/dev/null
    rm -rf "$w"
}
"""


def test_room_kernel_update_and_initramfs_update_succeed_on_full_size_esps() -> None:
    res = run_steps(*steps(
        ROOM + """
root_is rpool/ROOT/pve-1
K1=$(uname -r) K2=$(cat PENDING)
beadm_as_on_a_host
fake_kernel 6.1.0-1-amd64
fake_kernel 6.1.0-2-amd64
proxmox-boot-tool refresh >/dev/null
esp_room proxmox-alone
beadm init pve-1 2>&1 | tee /run/init.out
grep -F "the ESPs are tight: pve-1 keeps only the kernel" /run/init.out
beadm create pve-2
beadm create pve-3
esp_room beadm-3-bes
lean_only() {  # lean_only BE KVER: the BE has an entry for KVER and for no other kernel
    for e in esp1 esp2; do
        got=$(on_esps "ls /run/t/$e/loader/entries" | grep "^beadm-$1-" | tr '\n' ' ')
        if [ "$got" != "beadm-$1-$2.conf " ]; then echo "$e: $1 has: $got"; exit 1; fi
    done
}
lean_only pve-2 "$K1"
# initrds of the update are Proxmox-sized: 40 MiB that no compressor shrinks
head -c $((40 << 20)) /dev/urandom > /var/lib/pvelab-pad
cat > /etc/initramfs-tools/hooks/pvelab-pad <<'EOF'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
cp /var/lib/pvelab-pad "$DESTDIR/pvelab-pad"
EOF
chmod 755 /etc/initramfs-tools/hooks/pvelab-pad
pvelab-kernel-update 2>&1 | tail -n 5
ls -l /boot
esp_room kernel-install
beadm list
update-initramfs -u -k "$K2" 2>&1 | tail -n 5
esp_room update-initramfs
beadm check
on_esps 'ls -l /run/t/esp1/loader/entries'
for be in pve-2 pve-3; do
    on_esps "test -f /run/t/esp1/loader/entries/beadm-$be-$K1.conf"
    on_esps "test -f /run/t/esp2/loader/entries/beadm-$be-$K1.conf"
done
on_esps "test -f /run/t/esp1/loader/entries/beadm-pve-1-$K2.conf"
on_esps "test -f /run/t/esp2/loader/entries/beadm-pve-1-$K2.conf"
lean_only pve-3 "$K1"   # not the big 6.1.0-2 the full set would add
""".replace("PENDING", PENDING),
        """
root_is rpool/ROOT/pve-1
test "$(uname -r)" = "$(cat PENDING)"
beadm check
beadm activate -t pve-2
""".replace("PENDING", PENDING),
        """
root_is rpool/ROOT/pve-2
echo "KERNEL=$(uname -r)"
beadm check
""",
    ), timeout=2400)
    ok(res)
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/pve-1", "rpool/ROOT/pve-2"]
    figures = re.findall(r"^ESPBYTES (\S+) (\S+) (\d+) (\d+) (\d+)$", res.steps[1], re.M)
    whens = [f[0] for f in figures]
    assert whens == [w for w in ("proxmox-alone", "beadm-3-bes", "kernel-install",
                                 "update-initramfs") for _ in (1, 2)], figures
    for when, esp, used, avail, pair in figures:
        print(f"ESP bytes {when:17} {esp}: used {int(used):>11,} free {int(avail):>11,} "
              f"(Proxmox's largest pair {int(pair):,})")
        assert int(avail) >= int(pair) > 0
