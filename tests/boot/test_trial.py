"""Issue 13 item 2: ``beadm activate --trial NAME``, proven by rebooting the Proxmox-like machine.

pvelab and failed boots: qemu runs with ``-no-reboot``, so every reboot, reset or panic ends
the qemu process and pvelab powers the machine on again; a power-on in which no step ran is
allowed once in a row (a second one in a row is "no result"). A trial boot that fails never
reaches the step agent (``pvelab-boot.service`` is ordered after ``boot-complete.target``,
which the failing ``beadm-trial.service`` is required by, and the reboot it asks for cancels
the agent's start job), so it costs exactly that one idle power-on and the agent's "step
interrupted" logic never sees it. The broken-root scenario uses ``--tries 2``: with
N tries the machine falls back after N failed boots in a row: ``run_steps(idle_boots=N)``.

Scenarios (each a fresh machine):
- ``test_trial_check_fails_falls_back_then_good_trial_becomes_default``: a BE whose health
  check fails falls back to the running BE by itself (one failed boot), then a good trial
  becomes the default (it boots again after a plain reboot);
- ``test_trial_broken_initrd_falls_back_and_power_loss_consumes_a_try``: a BE whose initrd is
  broken (the kernel cannot mount its root and panics) falls back without a keyboard after
  both its tries (``--tries 2``: two failed boots in a row); then a power loss during a trial
  boot, before it was confirmed, costs one try and the trial continues and is confirmed at
  the next boot;
- ``test_trial_that_hangs_is_reset_by_the_watchdog_and_falls_back``: a BE whose boot hangs in
  emergency mode, then one whose health check hangs on a node with Proxmox's HA watchdog-mux
  (no panic either time), are reset by the trial's software watchdog and fall back.
MTTR (issue 13 item 5) is read from the timestamps pvelab logs (see the report).
"""

from __future__ import annotations

import pytest
from pvelab import run_steps
from scenario import ok, steps

pytestmark = pytest.mark.boot

TRIAL = r"""
K=$(uname -r)
counted() { on_esps 'ls /run/t/esp1/loader/entries /run/t/esp2/loader/entries' | grep '+' || true; }
no_counted() { local c; c=$(counted); [ -z "$c" ] || { echo "counted entries left: $c"; exit 1; }; }
json_tries() { beadm list --json | python3 -c 'import json,sys
for b in json.load(sys.stdin)["bes"]:
    if b["name"] == sys.argv[1]: print(b["trial_tries"])' "$1"; }
"""


def test_trial_check_fails_falls_back_then_good_trial_becomes_default() -> None:
    res = run_steps(*steps(
        TRIAL + """
beadm_as_on_a_host   # beadm-trial.service runs beadm with systemd's PATH (in every BE)
beadm init pve-1
beadm create pve-2
beadm create pve-3
d=$(beadm mount pve-3)
mkdir -p "$d/etc/beadm/checks.d"
printf '#!/bin/sh\\ntouch /var/lib/beadm-check-ran\\necho "demo check says no"\\nexit 1\\n' \
    > "$d/etc/beadm/checks.d/10-fails"
chmod 755 "$d/etc/beadm/checks.d/10-fails"
test -L "$d/etc/systemd/system/boot-complete.target.requires/beadm-trial.service"
beadm umount pve-3
if beadm activate --trial --tries 0 pve-3 2>/tmp/err; then echo "tries 0 accepted"; exit 1; fi
test "$(wc -l < /tmp/err)" = 1
if beadm activate --trial pve-1 2>/tmp/err; then echo "trial of the running BE"; exit 1; fi
test -z "$(counted)"
beadm activate --trial pve-3
beadm list
test "$(flags pve-3)" = T
test "$(flags pve-1)" = NR
test "$(json_tries pve-3)" = 3
case "$(efivar LoaderEntryDefault)" in "beadm-pve-3-$K+[123456789]*") ;;
    *) echo "LoaderEntryDefault is $(efivar LoaderEntryDefault)"; exit 1;; esac
on_esps 'grep -h "^default " /run/t/esp*/loader/loader.conf' | sort -u > /tmp/d
test "$(cat /tmp/d)" = "default beadm-pve-1-$K.conf"
test "$(counted | sort -u)" = "beadm-pve-3-$K+3.conf"
on_esps "grep -q 'panic=' /run/t/esp1/loader/entries/beadm-pve-3-$K+3.conf"
beadm sync      # keeps the trial: its counted entry and the EFI glob
beadm check
test "$(counted | sort -u)" = "beadm-pve-3-$K+3.conf"
test "$(flags pve-3)" = T
proxmox-boot-tool refresh   # rewrites loader.conf; the shutdown re-assert puts pve-1 back
""",
        TRIAL + """
# the trial boot of pve-3 failed its check and rebooted by itself: pve-1 again
root_is rpool/ROOT/pve-1
beadm list
test "$(flags pve-1)" = NR
test "$(efivar LoaderEntryDefault)" = "beadm-pve-1-$K.conf"
no_counted
d=$(beadm mount pve-3)
test -e "$d/var/lib/beadm-check-ran"   # pve-3 did boot, and its check ran there
beadm umount pve-3
beadm check
beadm activate --trial pve-2
test "$(flags pve-2)" = T
""",
        TRIAL + """
# the good trial: confirmed before boot-complete.target (this step runs after it)
root_is rpool/ROOT/pve-2
systemctl is-active beadm-trial.service
journalctl -b -u beadm-trial.service --no-pager | tee /tmp/j
grep -q "pve-2 is the default now" /tmp/j
# the trial's watchdog was armed at boot (q35 also has iTCO_wdt) and trial-boot stopped it:
# its timer is gone (sysfs "state" says inactive for an armed softdog no one opened)
grep -qx "Software Watchdog" /sys/class/watchdog/*/identity
if grep -q softdog_fire /proc/timer_list; then echo "the trial's watchdog still runs"; exit 1; fi
beadm list
test "$(flags pve-2)" = NR
test "$(efivar LoaderEntryDefault)" = "beadm-pve-2-$K.conf"
no_counted
beadm check
""",
        """
root_is rpool/ROOT/pve-2
""",
    ), timeout=900)
    ok(res)
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/pve-1", "rpool/ROOT/pve-2",
                         "rpool/ROOT/pve-2"], res.roots
    assert "+" in res.entries[2], res.entries  # the trial booted through the counted entry
    assert res.entries[3].startswith("beadm-pve-2-") and "+" not in res.entries[3]


def test_trial_broken_initrd_falls_back_and_power_loss_consumes_a_try() -> None:
    res = run_steps(*steps(
        TRIAL + """
beadm_as_on_a_host
beadm init pve-1
beadm create pve-2
beadm create pve-4
d=$(beadm mount pve-4)
# a broken initrd: the kernel cannot unpack it, finds no root and panics (panic= reboots)
head -c 100000 /dev/urandom > "$d/boot/initrd.img-$K"
beadm umount pve-4
beadm activate --trial --tries 2 pve-4
test "$(flags pve-4)" = T
test "$(json_tries pve-4)" = 2
# pve-2 loses power during its first trial boot, before the trial is confirmed
d=$(beadm mount pve-2)
cat > "$d/etc/systemd/system/power-loss-once.service" <<'EOF'
[Unit]
After=local-fs.target
Before=beadm-trial.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/power-loss-once
[Install]
WantedBy=multi-user.target
EOF
printf '#!/bin/sh\ntest -e /var/lib/power-lost && exit 0\ntouch /var/lib/power-lost; sync\n%s\n' \
    'echo o > /proc/sysrq-trigger; sleep 60' > "$d/usr/local/sbin/power-loss-once"
chmod 755 "$d/usr/local/sbin/power-loss-once"
ln -s ../power-loss-once.service "$d/etc/systemd/system/multi-user.target.wants/"
beadm umount pve-2
date +%s > /var/tmp/activated
""",
        TRIAL + """
# pve-4 panicked in both its tries (two power-ons with no step) and the loader fell back to
# pve-1 by itself; the trial is given up here
root_is rpool/ROOT/pve-1
journalctl -b -u beadm-trial.service --no-pager | tee /tmp/j
grep -q "trial boot of pve-4 given up" /tmp/j
test "$(efivar LoaderEntryDefault)" = "beadm-pve-1-$K.conf"
no_counted
beadm list
test "$(flags pve-1)" = NR
beadm check
beadm activate --trial pve-2
""",
        TRIAL + """
# pve-2's first trial boot lost power; the second try was confirmed
root_is rpool/ROOT/pve-2
test -e /var/lib/power-lost
journalctl -b -u beadm-trial.service --no-pager | grep -q "pve-2 is the default now"
test "$(flags pve-2)" = NR
no_counted
beadm check
""",
    ), timeout=900, idle_boots=2)
    ok(res)
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/pve-1", "rpool/ROOT/pve-2"], res.roots
    assert "+" in res.entries[2], res.entries  # confirmed from the counted entry (+2-1)
    # both tries of pve-4 were spent: two power-ons in a row ended with no step
    assert res.output.count("PVELAB qemu exited with no step done: power-on again") >= 2, \
        res.output


def test_trial_that_hangs_is_reset_by_the_watchdog_and_falls_back() -> None:
    """Trial boots that hang with no panic are reset by the trial's software watchdog, each
    spending its try, and the loader falls back to the running BE by itself:
    pve-5 hangs in emergency mode (a missing /etc/fstab device: local-fs.target fails, and
    the console waits for a root password no one types); pve-6 hangs in a health check
    (``sleep infinity`` in /etc/beadm/checks.d) on a node with Proxmox's HA units, whose
    watchdog-mux (stand-in with the real unit's name and dependencies, read from
    pve-ha-manager: pulled in by pve-ha-lrm, feeds /dev/watchdog every second) would keep the
    hung boot alive if it started: beadm's generator orders it after the trial."""
    res = run_steps(*steps(
        TRIAL + """
beadm_as_on_a_host
beadm init pve-1
beadm create pve-5
beadm create pve-6
d=$(beadm mount pve-5)
test -L "$d/etc/systemd/system/sysinit.target.wants/beadm-trial-watchdog.service"
test -x "$d/etc/systemd/system-generators/beadm-trial-generator"
# the hang: a local mount whose device never comes; local-fs.target fails -> emergency mode
gone=UUID=0bad0bad-dead-4bad-8bad-0bad0bad0bad
echo "$gone /srv/gone ext4 defaults,x-systemd.device-timeout=5s 0 2" >> "$d/etc/fstab"
# evidence from inside the hung boot: the watchdog's state once armed (before any mount)
cat > "$d/etc/systemd/system/wd-evidence.service" <<'EOF'
[Unit]
DefaultDependencies=no
After=beadm-trial-watchdog.service systemd-remount-fs.service
Before=local-fs-pre.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/wd-evidence
[Install]
WantedBy=sysinit.target
EOF
cat > "$d/usr/local/sbin/wd-evidence" <<'EOF'
#!/bin/sh
for w in /sys/class/watchdog/watchdog*; do
    echo "$(cat $w/identity) $(cat $w/state) $(cat $w/timeout)"
done > /var/lib/wd-evidence
cat /proc/cmdline >> /var/lib/wd-evidence
grep -q softdog_fire /proc/timer_list && echo "softdog timer armed" >> /var/lib/wd-evidence
sync
EOF
chmod 755 "$d/usr/local/sbin/wd-evidence"
ln -s ../wd-evidence.service "$d/etc/systemd/system/sysinit.target.wants/"
beadm umount pve-5
# pve-6: Proxmox's HA units (stand-ins) and a health check that never returns
d=$(beadm mount pve-6)
cat > "$d/etc/systemd/system/watchdog-mux.service" <<'EOF'
[Unit]
Description=stand-in for Proxmox VE watchdog multiplexer (feeds /dev/watchdog)
[Service]
ExecStart=/usr/local/sbin/watchdog-mux
Restart=no
EOF
cat > "$d/usr/local/sbin/watchdog-mux" <<'EOF'
#!/bin/bash
touch /var/lib/watchdog-mux-started; sync
[ -e /dev/watchdog ] || modprobe -q softdog
exec 3>/dev/watchdog
while :; do printf x >&3; sleep 1; done
EOF
cat > "$d/etc/systemd/system/pve-ha-lrm.service" <<'EOF'
[Unit]
Description=stand-in for PVE Local HA Resource Manager Daemon
Wants=watchdog-mux.service
After=watchdog-mux.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
[Install]
WantedBy=multi-user.target
EOF
chmod 755 "$d/usr/local/sbin/watchdog-mux"
ln -s ../pve-ha-lrm.service "$d/etc/systemd/system/multi-user.target.wants/"
mkdir -p "$d/etc/beadm/checks.d"
printf '#!/bin/sh\ntouch /var/lib/check-started; sync\nexec sleep infinity\n' \
    > "$d/etc/beadm/checks.d/50-hangs"
chmod 755 "$d/etc/beadm/checks.d/50-hangs"
beadm umount pve-6
if beadm activate --trial --watchdog 10 pve-5 2>/tmp/err; then echo "10 s accepted"; exit 1; fi
test "$(wc -l < /tmp/err)" = 1
beadm activate --trial --tries 1 --watchdog 90 pve-5
arm='softdog.soft_margin=90 softdog.soft_active_on_boot=1'
on_esps "grep -q '$arm' /run/t/esp1/loader/entries/beadm-pve-5-$K+1.conf"
if lsmod | grep -q '^softdog'; then echo "softdog loaded in a boot that is no trial"; exit 1; fi
""",
        TRIAL + """
# pve-5 hung in emergency mode; the watchdog reset it (its one try); pve-1 again, by itself
root_is rpool/ROOT/pve-1
journalctl -b -u beadm-trial.service --no-pager | tee /tmp/j
grep -q "trial boot of pve-5 given up" /tmp/j
test "$(efivar LoaderEntryDefault)" = "beadm-pve-1-$K.conf"
no_counted
test "$(flags pve-1)" = NR
if lsmod | grep -q '^softdog'; then echo "softdog loaded in the fallback boot"; exit 1; fi
d=$(beadm mount pve-5)
cat "$d/var/lib/wd-evidence"
grep -q "^Software Watchdog .* 90$" "$d/var/lib/wd-evidence"
grep -qx "softdog timer armed" "$d/var/lib/wd-evidence"
beadm umount pve-5
beadm check
beadm activate --trial --tries 1 --watchdog 90 pve-6
""",
        TRIAL + """
# pve-6's health check hung; watchdog-mux waited for the trial, so the watchdog reset it
root_is rpool/ROOT/pve-1
journalctl -b -u beadm-trial.service --no-pager | tee /tmp/j
grep -q "trial boot of pve-6 given up" /tmp/j
no_counted
d=$(beadm mount pve-6)
test -e "$d/var/lib/check-started"              # the trial boot reached its checks
test ! -e "$d/var/lib/watchdog-mux-started"     # and watchdog-mux never fed the watchdog
beadm umount pve-6
beadm check
""",
    ), timeout=900)
    ok(res)
    assert res.roots == ["rpool/ROOT/pve-1"] * 3, res.roots
    assert res.output.count("PVELAB qemu exited with no step done: power-on again") == 2, \
        res.output
    for line in res.output.splitlines():  # MTTR: a hung boot's power-on to pve-1's report
        if "reported" in line and "after the previous" in line:
            print("MTTR (hang):", line)


def test_trial_waits_for_a_held_lock_and_gets_missing_units() -> None:
    """Issue 23 items 6, 7 and 9c. pve-8 lost its trial units (as a BE made by the old shell
    beadm, by ``--backend none`` or received from elsewhere): ``activate --trial`` puts them
    back, and its trial boot is confirmed; its health check proves that the checks run in
    the host's own mount namespace, with no ESP mounted and the lock free. pve-7 holds the
    beadm lock for 90 s at boot, from just before ``beadm-trial.service`` starts (as an apt
    or kernel hook running then would): trial-boot waits for it, then confirms the trial and
    stops its watchdog."""
    res = run_steps(*steps(
        TRIAL + """
beadm_as_on_a_host
beadm init pve-1
beadm create pve-7
beadm create pve-8
# pve-8: no trial units at all (nor from a package)
d=$(beadm mount pve-8)
for f in etc/systemd/system/beadm-trial.service etc/systemd/system/beadm-trial-watchdog.service \
    etc/systemd/system/multi-user.target.wants/beadm-trial.service \
    etc/systemd/system/boot-complete.target.requires/beadm-trial.service \
    etc/systemd/system/sysinit.target.wants/beadm-trial-watchdog.service \
    etc/systemd/system-generators/beadm-trial-generator \
    lib/systemd/system/beadm-trial.service lib/systemd/system/beadm-trial-watchdog.service \
    usr/lib/systemd/system/beadm-trial.service \
    usr/lib/systemd/system/beadm-trial-watchdog.service; do
    rm -f "$d/$f"
done
test ! -e "$d/etc/systemd/system/beadm-trial.service"
# its check: run where the host's services run, no ESP mounted, the lock free
mkdir -p "$d/etc/beadm/checks.d"
cat > "$d/etc/beadm/checks.d/10-context" <<'EOF'
#!/bin/sh
[ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ] ||
    { echo "the check runs in another mount namespace"; exit 1; }
# (beadm mounts ESPs under /run/beadm-*, in its own namespace)
if findmnt -rn -t vfat -o TARGET | grep -q '^/run/beadm-'; then echo "an ESP is mounted"; exit 1; fi
flock -n /run/beadm.lock true || { echo "the beadm lock is held during the checks"; exit 1; }
touch /var/lib/context-checked
EOF
chmod 755 "$d/etc/beadm/checks.d/10-context"
beadm umount pve-8
# pve-7: a unit that takes the beadm lock just before beadm-trial.service and keeps it 90 s
d=$(beadm mount pve-7)
cat > "$d/etc/systemd/system/hold-beadm-lock.service" <<'EOF'
[Unit]
After=local-fs.target pve-cluster.service pveproxy.service pvedaemon.service pvestatd.service
Before=beadm-trial.service
[Service]
Type=forking
ExecStart=/usr/local/sbin/hold-beadm-lock
[Install]
WantedBy=multi-user.target
EOF
cat > "$d/usr/local/sbin/hold-beadm-lock" <<'EOF'
#!/bin/bash
exec 9>/run/beadm.lock
flock 9
date +%s > /var/lib/lock-taken
( sleep 90; date +%s > /var/lib/lock-released; sync ) &
sync
EOF
chmod 755 "$d/usr/local/sbin/hold-beadm-lock"
ln -s ../hold-beadm-lock.service "$d/etc/systemd/system/multi-user.target.wants/"
beadm umount pve-7
beadm activate --trial pve-8
# the trial units are in pve-8 now, enabled, the same text as the running BE's
d=$(beadm mount pve-8)
u=etc/systemd/system
for f in beadm-trial.service beadm-trial-watchdog.service; do cmp "$d/$u/$f" "/$u/$f"; done
test "$(readlink "$d/$u/boot-complete.target.requires/beadm-trial.service")" = \
    ../beadm-trial.service
test "$(readlink "$d/$u/multi-user.target.wants/beadm-trial.service")" = ../beadm-trial.service
test "$(readlink "$d/$u/sysinit.target.wants/beadm-trial-watchdog.service")" = \
    ../beadm-trial-watchdog.service
test -x "$d/etc/systemd/system-generators/beadm-trial-generator"
beadm umount pve-8
test "$(flags pve-8)" = T
""",
        TRIAL + """
# pve-8's trial boot ran its checks (in the host's context) and was confirmed
root_is rpool/ROOT/pve-8
systemctl is-active beadm-trial.service
journalctl -b -u beadm-trial.service --no-pager | tee /tmp/j
grep -q "pve-8 is the default now" /tmp/j
test -e /var/lib/context-checked
if grep -q softdog_fire /proc/timer_list; then echo "the trial's watchdog still runs"; exit 1; fi
test "$(flags pve-8)" = NR
no_counted
beadm check
beadm activate --trial pve-7
test "$(flags pve-7)" = T
""",
        TRIAL + """
# pve-7's trial boot found the lock held: it waited, then confirmed and stopped the watchdog
root_is rpool/ROOT/pve-7
systemctl is-active beadm-trial.service
journalctl -b -u beadm-trial.service --no-pager -o short-unix | tee /tmp/j
grep -q "waiting up to .* for another beadm command to finish" /tmp/j
grep "pve-7 is the default now" /tmp/j > /tmp/done
taken=$(cat /var/lib/lock-taken); released=$(cat /var/lib/lock-released)
done_at=$(cut -d. -f1 < /tmp/done)
echo "lock taken $taken, released $released, trial confirmed $done_at"
test "$done_at" -ge "$released"
if grep -q softdog_fire /proc/timer_list; then echo "the trial's watchdog still runs"; exit 1; fi
test "$(flags pve-7)" = NR
test "$(efivar LoaderEntryDefault)" = "beadm-pve-7-$K.conf"
no_counted
beadm check
""",
    ), timeout=1200)
    ok(res)
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/pve-8", "rpool/ROOT/pve-7"], res.roots
    assert "+" in res.entries[1] and "+" in res.entries[2], res.entries  # both were trials
