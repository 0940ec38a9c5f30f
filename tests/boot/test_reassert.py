"""Issue 11 item 5: the activation survives every loader.conf rewrite, also those no kernel hook
follows, on firmware that refuses EFI variable writes (one machine, two boots).

EFI writes are refused by remounting efivarfs read-only for the whole first boot: every write
fails with EROFS, so loader.conf alone carries beadm's choice. Firmware like the Dell servers
Proxmox's commit 83a41a1a names refuses systemd's loader variables but still takes boot
entries, and proxmox-boot-tool's ``reinit`` runs ``bootctl install`` with EFI variables (it
fails when it cannot create its boot entry): a ``bootctl`` wrapper in /usr/bin makes
efivarfs writable for bootctl alone, for the time it runs.
Then, with no kernel hook running afterwards:
  - the stand-in proxmox-kernel-helper is upgraded by dpkg alone: its postinst runs
    ``proxmox-boot-tool reinit``, loader.conf says ``default proxmox-*`` (nothing re-asserts);
  - upgraded through apt (``pvelab-helper-upgrade``): the same reinit, then beadm's
    ``DPkg::Post-Invoke`` hook re-asserts pve-2;
  - a manual ``proxmox-boot-tool refresh`` (hook scripts called directly): ``default proxmox-*``
    again, and nothing re-asserts until beadm-reassert.service's ExecStop at the reboot;
the next boot is pve-2, and loader.conf names pve-2 again."""

from __future__ import annotations

import pytest
from pvelab import run_steps
from scenario import ok, steps

pytestmark = pytest.mark.boot

DEFAULTS = r"""
defaults() {
    on_esps 'grep -h "^default " /run/t/esp1/loader/loader.conf /run/t/esp2/loader/loader.conf' \
    | tr '\n' ' '; }
expect_defaults() {  # expect_defaults beadm-pve-2|proxmox WHEN
    local d; d=$(defaults); echo "$2: $d"
    case "$1" in
        beadm-pve-2) [[ "$d" == "default beadm-pve-2-"*" default beadm-pve-2-"* ]] ;;
        proxmox) [ "$d" = "default proxmox-* default proxmox-* " ] ;;
    esac || { echo "expected $1 on both ESPs $2"; exit 1; }
}
"""


def test_activation_survives_reinit_refresh_and_refused_efi_writes() -> None:
    res = run_steps(*steps(
        DEFAULTS + """
mount -o remount,ro /sys/firmware/efi/efivars
mv /usr/bin/bootctl /usr/bin/bootctl.real   # (apt runs dpkg with PATH=/usr/sbin:/usr/bin:...)
cat > /usr/bin/bootctl <<'EOF'
#!/bin/sh
# firmware that takes boot entries but refuses systemd's loader variables (see the test doc)
mount -o remount,rw /sys/firmware/efi/efivars
/usr/bin/bootctl.real "$@"; rc=$?
mount -o remount,ro /sys/firmware/efi/efivars
exit $rc
EOF
chmod 755 /usr/bin/bootctl
if printf '\\7\\0\\0\\0x\\0' > /sys/firmware/efi/efivars/BeadmProbe-$V 2>/dev/null; then
    echo "EFI writes are not refused"; exit 1; fi
beadm_as_on_a_host   # the shutdown unit runs beadm with systemd's PATH
beadm init pve-1
beadm create pve-2
beadm activate pve-2 2>&1 | tee /run/activate.out
grep -q "LoaderEntryDefault not written" /run/activate.out
test -z "$(efivar LoaderEntryDefault)"
test -f /etc/apt/apt.conf.d/99beadm
systemctl is-active beadm-reassert.service
test "$(flags pve-2)" = R
expect_defaults beadm-pve-2 "after activate"

dpkg -i /var/cache/pvelab/helper-upgrade/proxmox-kernel-helper_*_all.deb | tee /run/dpkg.out
grep -q "reinit" /run/dpkg.out
expect_defaults proxmox "after the helper upgrade by dpkg alone (reinit, no hook)"
beadm sync
expect_defaults beadm-pve-2 "after beadm sync"

pvelab-helper-upgrade | tee /run/apt.out
grep -q "reinit" /run/apt.out
expect_defaults beadm-pve-2 "after the helper upgrade through apt (reinit + DPkg::Post-Invoke)"

proxmox-boot-tool refresh
expect_defaults proxmox "after a manual refresh (hook scripts called directly)"
test -z "$(efivar LoaderEntryDefault)"
beadm list
""",
        DEFAULTS + """
root_is rpool/ROOT/pve-2
expect_defaults beadm-pve-2 "after the reboot (re-asserted by beadm-reassert.service)"
test "$(flags pve-2)" = NR
beadm check
""",
    ), timeout=1200)
    ok(res)
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/pve-2"]
    assert res.entries[1].startswith("beadm-pve-2-")
