"""Issue 13 item 1: ``beadm upgrade`` installs the machine's pending kernel update in a new BE
while pve-1 keeps running (and booting) its old kernel; a trial boot of the new BE runs the
new kernel and makes it the default.

The machine has no network: the step makes a flat apt repository from the staged update
(``/var/cache/pvelab/kernel-update``, see ``lab/machine/pvelab-kernel-update``): the kernel
image, its ``proxmox-kernel-KVER`` stand-in, and a small package built here that carries the
zfs modules built for that kernel (Proxmox kernels ship their own zfs.ko; the lab's Debian
kernel does not). It depends on the image, so dpkg configures it after the image, and its
postinst runs depmod and rebuilds that kernel's initrd with zfs in it.

Before it, a failing upgrade (a package that does not exist) leaves a BE marked failed that
``activate`` refuses and ``destroy`` removes, and changes nothing of the running system.
"""

from __future__ import annotations

import pytest
from pvelab import run_steps
from scenario import ok, steps

pytestmark = [pytest.mark.boot]

REPO = r"""
S=/var/cache/pvelab/kernel-update
R=/var/tmp/pvelab-repo
K=$(uname -r)
NEW=$(cat $S/kver)
"""

MAKE_REPO = r"""
test "$K" != "$NEW"
rm -rf $R /var/tmp/zfs-pkg && mkdir -p $R
set -- $S/linux-image-${NEW}_*.deb
cp "$@" $R/
IMAGE=$(dpkg-deb -f "$1" Package)
PKGS="$IMAGE"
if [ -e $S/proxmox-kernel-${NEW}_1_all.deb ]; then
    cp $S/proxmox-kernel-${NEW}_1_all.deb $R/
    PKGS="$PKGS proxmox-kernel-$NEW"
fi
P=/var/tmp/zfs-pkg
mkdir -p $P/DEBIAN "$P/lib/modules/$NEW"
tar -C "$P/lib/modules/$NEW" -xf $S/zfs-modules.tar
cat > $P/DEBIAN/control <<EOF
Package: pvelab-zfs-modules-$NEW
Version: 1
Architecture: amd64
Depends: $IMAGE
Maintainer: beadm lab <lab@invalid>
Description: zfs modules for $NEW (lab stand-in: a Proxmox kernel ships its own zfs.ko)
EOF
cat > $P/DEBIAN/postinst <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
    depmod $NEW
    update-initramfs -u -k $NEW
fi
EOF
chmod 755 $P/DEBIAN/postinst
dpkg-deb -Zgzip --root-owner-group --build $P $R/pvelab-zfs-modules-${NEW}_1_amd64.deb
PKGS="$PKGS pvelab-zfs-modules-$NEW"
python3 - $R <<'EOF'
import email.utils, hashlib, pathlib, subprocess, sys
r = pathlib.Path(sys.argv[1])
stanzas = []
for deb in sorted(r.glob("*.deb")):
    ctl = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True,
                         check=True).stdout.rstrip("\n")
    data = deb.read_bytes()
    stanzas.append(f"{ctl}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                   f"MD5sum: {hashlib.md5(data).hexdigest()}\n"
                   f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
packages = "\n".join(stanzas).encode()
(r / "Packages").write_bytes(packages)
(r / "Release").write_text(
    f"Origin: pvelab\nLabel: pvelab\nDate: {email.utils.formatdate(usegmt=True)}\n"
    f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} Packages\n")
EOF
echo "deb [trusted=yes] file:$R ./" > /etc/apt/sources.list.d/pvelab-local.list
apt-get update -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/pvelab-local.list \
    -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
apt-cache policy $PKGS
"""

# what the ESPs say about Proxmox's entries and the default (compared before and after)
ESP_STATE = r"""
esp_state() { on_esps 'for e in /run/t/esp1 /run/t/esp2; do
    grep "^default" $e/loader/loader.conf
    (cd $e && ls -d EFI/proxmox/* loader/entries/proxmox-*.conf &&
        md5sum loader/entries/proxmox-*.conf)
done'; }
"""


def test_upgrade_installs_the_kernel_update_in_a_new_be_then_trial_boot_runs_it() -> None:
    res = run_steps(*steps(
        REPO + ESP_STATE + MAKE_REPO + r"""
beadm_as_on_a_host   # beadm also inside the clone: its hooks there must do nothing
beadm init pve-1
beadm activate pve-1
esp_state > /tmp/esp.before
cat /tmp/esp.before
dpkg-query -W > /tmp/pkgs.before

# 1. a failing upgrade: the clone is marked failed, the running system is untouched
if beadm upgrade -q bad -- install -y no-such-package-pvelab 2>/tmp/err; then
    echo "upgrade with a missing package succeeded"; exit 1
fi
cat /tmp/err
test "$(wc -l < /tmp/err)" = 1
grep -q "BE bad is marked failed" /tmp/err
grep -q "E: Unable to locate package no-such-package-pvelab" /tmp/err
beadm list
desc=$(beadm list -H | awk -F'\t' '$1 == "bad" { print $6 }')
case "$desc" in "[failed] "*) ;; *) echo "bad listed as: $desc"; exit 1;; esac
test "$(beadm list --json | python3 -c 'import json,sys
print([b["state"] for b in json.load(sys.stdin)["bes"] if b["name"] == "bad"][0])')" = failed
if beadm activate bad 2>/tmp/err; then echo "failed BE activated"; exit 1; fi
grep -q "its upgrade failed" /tmp/err
beadm destroy -F bad
if zfs list rpool/ROOT/bad 2>/dev/null; then echo "bad not destroyed"; exit 1; fi

# 2. the kernel update in a new BE
date +%s > /var/tmp/upgrade.start
# stderr as it reaches the terminal, each line stamped with the time it arrived
beadm -v upgrade pve-2 -- install -y $PKGS 2>&1 >/tmp/out | python3 -c '
import sys, time
for line in iter(sys.stdin.readline, ""):
    print(f"{time.time():.3f} {line}", end="", flush=True)' >/tmp/log.t ||
    { cat /tmp/log.t; exit 1; }
cut -d" " -f2- /tmp/log.t > /tmp/log
echo "upgrade took $(( $(date +%s) - $(cat /var/tmp/upgrade.start) )) s"
cat /tmp/out
# issue 25 item 8: apt's lines reach the terminal while apt runs, not once it has ended
# (the runner's -v log says when apt-get ended and how long it ran)
python3 - <<'EOF'
import re
stamped = [ln.rstrip("\n").split(" ", 1) for ln in open("/tmp/log.t")]
apt = [(float(t), m) for t, m in stamped if m.startswith("apt: ")]
ended = [(float(t), float(re.search(r"took ([0-9.]+)s", m).group(1)))
         for t, m in stamped
         if m.startswith("beadm: took ") and ": chroot " in m and " apt-get " in m]
assert len(apt) >= 10, apt
assert any("Setting up pvelab-zfs-modules" in m for _, m in apt), apt
assert len(ended) == 1, ended
(end, ran), = ended
first, last = apt[0][0], apt[-1][0]
print(f"apt ran {ran:.1f}s; its first line came {end - first:.1f}s before it ended, "
      f"its lines over {last - first:.1f}s")
assert ran >= 2, ran
assert end - first >= ran / 2, (apt[0], end, ran)
assert last - first >= ran / 2, (apt[0], apt[-1], ran)
EOF
if grep -q "^apt: " /tmp/out; then echo "apt's lines on stdout"; exit 1; fi
grep -E "in a chroot|apt: (Setting up|Running hook|No /etc/kernel)" /tmp/log || true
grep -q "^installed $IMAGE " /tmp/out
grep -q "^installed pvelab-zfs-modules-$NEW 1$" /tmp/out
grep -q "^BE pve-2 is ready" /tmp/out
# pve-1: same kernel, same packages, nothing new in /boot, still the default
test "$(uname -r)" = "$K"
test ! -e "/boot/vmlinuz-$NEW"
dpkg-query -W > /tmp/pkgs.after
cmp /tmp/pkgs.before /tmp/pkgs.after
test "$(zpool get -H -o value bootfs rpool)" = rpool/ROOT/pve-1
test "$(flags pve-1)" = NR
test "$(flags pve-2)" = -
test "$(efivar LoaderEntryDefault)" = "beadm-pve-1-$K.conf"
if grep -q beadm-upgrade /proc/self/mountinfo; then echo "left mounted"; exit 1; fi
# Proxmox's entries, EFI/proxmox and loader.conf's default: as before the upgrade
esp_state > /tmp/esp.after
diff /tmp/esp.before /tmp/esp.after
# beadm wrote pve-2's entries itself, for the new kernel
on_esps "ls /run/t/esp1/loader/entries/beadm-pve-2-$NEW.conf \
    /run/t/esp2/loader/entries/beadm-pve-2-$NEW.conf"
# inside pve-2: the kernel, zfs in its initrd, no policy-rc.d left, its ESP list intact
d=$(beadm mount pve-2)
test -f "$d/boot/vmlinuz-$NEW"
lsinitramfs "$d/boot/initrd.img-$NEW" > /tmp/initrd.list
grep -q '/zfs.ko' /tmp/initrd.list
test ! -e "$d/usr/sbin/policy-rc.d"
cmp /etc/kernel/proxmox-boot-uuids "$d/etc/kernel/proxmox-boot-uuids"
grep -q '^root=ZFS=rpool/ROOT/pve-2 ' "$d/etc/kernel/cmdline"
# beadm run in a chroot refuses what changes boot, and its hook does nothing
B=/usr/local/sbin/beadm
unshare --mount --propagation private sh -c "mount -t proc proc $d/proc
    chroot $d $B sync --if-used 2>/tmp/chroot.err; echo rc=\$? >> /tmp/chroot.err
    chroot $d $B activate pve-2 2>>/tmp/chroot.err; echo rc=\$? >> /tmp/chroot.err"
cat /tmp/chroot.err
grep -q "in a chroot" /tmp/chroot.err
test "$(grep -c '^rc=' /tmp/chroot.err)" = 2
grep -qx 'rc=0' /tmp/chroot.err
grep -qx 'rc=5' /tmp/chroot.err
beadm umount pve-2
test "$(efivar LoaderEntryDefault)" = "beadm-pve-1-$K.conf"
beadm check
beadm activate --trial pve-2
test "$(flags pve-2)" = T
echo "KERNEL=$K NEW=$NEW"
""",
        REPO + r"""
# the trial boot: pve-2 on the new kernel, confirmed by the health checks
root_is rpool/ROOT/pve-2
echo "KERNEL=$K NEW=$NEW"
test "$K" = "$NEW"
case "$(modinfo -n zfs)" in "/lib/modules/$K/"*) ;; *) echo "zfs.ko not under $K"; exit 1;; esac
journalctl -b -u beadm-trial.service --no-pager | grep -q "pve-2 is the default now"
beadm list
test "$(flags pve-2)" = NR
beadm check
""",
        REPO + r"""
# a plain reboot: pve-2 stays the default, on the new kernel
root_is rpool/ROOT/pve-2
test "$K" = "$NEW"
test "$(flags pve-2)" = NR
""",
    ), timeout=1800)
    ok(res)
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/pve-2", "rpool/ROOT/pve-2"], res.roots
    assert "+" in res.entries[1], res.entries  # the trial booted through its counted entry
    assert res.entries[2].startswith("beadm-pve-2-") and "+" not in res.entries[2]
