"""Re-asserting the activated BE where no kernel hook runs: an apt hook and a shutdown unit.

Proxmox rewrites every ESP's ``loader.conf`` ``default`` line also where no kernel or
initramfs hook dir runs afterwards (so ``zzz-beadm`` never sees it): ``proxmox-boot-tool
reinit`` on every proxmox-kernel-helper configure and on dpkg triggers (systemd-boot, GRUB,
shim upgrades), ``proxmox-boot-cleanup.service`` at boot, a manual ``proxmox-boot-tool
refresh`` (it calls its hook scripts directly). Where the EFI variable ``LoaderEntryDefault``
carries beadm's choice this does not matter; on firmware that refuses EFI writes
``loader.conf`` is all there is. Two more re-asserts close the gap:

* ``/etc/apt/apt.conf.d/99beadm``: ``DPkg::Post-Invoke`` runs ``beadm sync --if-used`` after
  every dpkg run apt makes (package configures and triggers included). Quiet; it never fails
  apt (one warning line when the sync fails).
* The same file's ``DPkg::Pre-Install-Pkgs`` runs ``beadm apt-hook`` (the automatic
  snapshot before an apt run, off unless ``beadm.conf`` turns it on). Its first word is
  the assignment ``BEADM_HOOK=apt``: apt keys the hook's protocol version on the first
  word, and this one is ours alone (a first word ``if`` or ``sh`` would be shared).
* ``beadm-reassert.service``: a oneshot unit that stays active (``RemainAfterExit``) and runs
  ``beadm sync --if-used`` as its ``ExecStop``, i.e. at every shutdown and reboot, after
  everything that ran since boot (``proxmox-boot-cleanup.service`` included: it is ordered
  after it) and before local file systems, ZFS and efivarfs go away (ordered after them, so
  stopped before them).

``beadm init``/``create``/``rename`` install both into the BE (like ``zzz-beadm``) and, for
the running BE, start the unit at once. The Debian package ships the same files (``hooks/``;
a unit test checks the copies match).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from beadm import confined
from beadm.errors import BeadmError
from beadm.runner import Runner

APT_CONF = "etc/apt/apt.conf.d/99beadm"
UNIT_NAME = "beadm-reassert.service"
UNIT = f"etc/systemd/system/{UNIT_NAME}"
WANTS = f"etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"

APT_TEXT = """\
// beadm (boot environments): after every dpkg run, re-assert the boot environment beadm
// activated. A package configure or dpkg trigger (proxmox-kernel-helper's reinit) may have
// rewritten loader.conf on the ESPs with no kernel hook running afterwards.
// Quiet; never fails apt. Installed by 'beadm init' and by the beadm package.
DPkg::Post-Invoke { "if command -v beadm >/dev/null 2>&1 && test -s /etc/kernel/proxmox-boot-uuids -o -s /etc/kernel/pve-efiboot-uuids; then beadm sync --if-used >/dev/null 2>&1 || echo 'beadm: sync after dpkg failed: boot entries may be stale; run beadm sync' >&2; fi; true"; };
// Before dpkg runs (once per dpkg session, only when packages are installed, upgraded or
// removed): an automatic snapshot of the running BE, only if /etc/beadm/beadm.conf says
// auto_snapshot = yes (default no). apt passes its action list (protocol version 3, keyed
// on the command's first word) on stdin, read to its end even without beadm (a hook that
// leaves it unread can fail apt's write). Waits at most 5 s for another beadm command;
// never fails apt.
DPkg::Pre-Install-Pkgs { "BEADM_HOOK=apt command -v beadm >/dev/null 2>&1 && beadm apt-hook || { cat >/dev/null; true; }"; };
DPkg::Tools::Options::BEADM_HOOK=apt::Version "3";
"""  # noqa: E501

# what the units have in common: a one-shot service that stays active (its ExecStop runs at
# shutdown), and the condition of a proxmox-boot host
_ONESHOT = """
[Service]
Type=oneshot
RemainAfterExit=yes
"""


def _unit(about: str, description: str, body: str) -> str:
    """A unit file of beadm's: ``about`` (comment lines), its [Unit] head, ``body``."""
    return (f"{about}# Installed by 'beadm init' and by the beadm package.\n[Unit]\n"
            f"Description=beadm: {description}\nDocumentation=man:beadm(8)\n{body}")


_PROXMOX_BOOT_ONESHOT = """\
ConditionPathExists=|/etc/kernel/proxmox-boot-uuids
ConditionPathExists=|/etc/kernel/pve-efiboot-uuids
""" + _ONESHOT

UNIT_TEXT = _unit("""\
# beadm (boot environments): re-asserts the activated boot environment at every shutdown and
# reboot (ExecStop), after whatever rewrote loader.conf since boot with no hook following:
# a manual proxmox-boot-tool refresh, proxmox-boot-cleanup.service, a reinit.
""", "re-assert the activated boot environment at shutdown", """\
After=local-fs.target zfs-mount.service zfs-import.target sys-firmware-efi-efivars.mount
After=systemd-udev-settle.service proxmox-boot-cleanup.service
""" + _PROXMOX_BOOT_ONESHOT + """ExecStart=/bin/true
ExecStop=/bin/sh -c 'if command -v beadm >/dev/null 2>&1; then beadm sync --if-used || echo "beadm: sync at shutdown failed" >&2; fi; true'
TimeoutStopSec=300

[Install]
WantedBy=multi-user.target
""")  # noqa: E501

TRIAL_UNIT_NAME = "beadm-trial.service"
TRIAL_UNIT = f"etc/systemd/system/{TRIAL_UNIT_NAME}"
TRIAL_UNIT_TEXT = _unit("""\
# beadm (boot environments): ends a trial boot ('beadm activate --trial NAME') at every boot.
# In the BE on trial, once the Proxmox services have started: the health checks pass -> NAME
# becomes the default; one fails -> the previous default is restored and the machine reboots
# into it. In another BE: a pending trial is given up. No trial pending: one EFI variable read.
""", "confirm or give up a trial boot", """\
After=local-fs.target zfs-mount.service zfs-import.target sys-firmware-efi-efivars.mount
After=pve-cluster.service pveproxy.service pvedaemon.service pvestatd.service
After=pve-storage.target systemd-udev-settle.service
Before=boot-complete.target
""" + _PROXMOX_BOOT_ONESHOT + """\
ExecStart=/bin/sh -c 'if command -v beadm >/dev/null 2>&1; then exec beadm trial-boot; fi'
# the checks, then the lock: waited for as the kernel and apt hooks wait (30 min at most)
TimeoutStartSec=45min

[Install]
WantedBy=multi-user.target
RequiredBy=boot-complete.target
""")

WATCHDOG_UNIT_NAME = "beadm-trial-watchdog.service"
WATCHDOG_UNIT = f"etc/systemd/system/{WATCHDOG_UNIT_NAME}"
WATCHDOG_UNIT_TEXT = _unit("""\
# beadm (boot environments): the dead man's switch of a trial boot ('beadm activate --trial').
# Only when the kernel command line arms it (a trial entry: softdog.soft_active_on_boot=1 and
# softdog.soft_margin=S): loads the software watchdog, early and before any local mount, so a
# trial boot that hangs is reset after S seconds and its try is spent; beadm-trial.service
# stops the watchdog once the trial boot passed its checks.
""", "arm the watchdog of a trial boot", """\
DefaultDependencies=no
After=systemd-modules-load.service
Before=local-fs-pre.target sysinit.target
Wants=local-fs-pre.target
ConditionKernelCommandLine=softdog.soft_active_on_boot=1
""" + _ONESHOT + """ExecStart=/sbin/modprobe softdog

[Install]
WantedBy=sysinit.target
""")

GENERATOR_NAME = "beadm-trial-generator"
GENERATOR = f"etc/systemd/system-generators/{GENERATOR_NAME}"
GENERATOR_TEXT = """\
#!/bin/sh
# beadm (boot environments): a systemd generator for trial boots ('beadm activate --trial').
# Only when the kernel command line arms the trial's watchdog (softdog.soft_active_on_boot=1):
# Proxmox's watchdog-mux (pulled in by pve-ha-crm and pve-ha-lrm on every node) opens the
# watchdog device and feeds it every second, which would keep a hung trial boot alive; it
# waits for beadm-trial.service here, so it starts only once the trial is settled (confirmed:
# beadm has stopped the trial's watchdog, and watchdog-mux takes it over as on any boot).
# Installed by 'beadm init' and by the beadm package.
set -eu
case " $(cat /proc/cmdline) " in
    *" softdog.soft_active_on_boot=1 "*) ;;
    *) exit 0 ;;
esac
dir="${1:-/run/systemd/generator}/watchdog-mux.service.d"
mkdir -p "$dir"
printf '[Unit]\\nAfter=beadm-trial.service\\n' > "$dir/50-beadm-trial.conf"
"""

FILES = ((APT_CONF, APT_TEXT, 0o644), (UNIT, UNIT_TEXT, 0o644),
         (TRIAL_UNIT, TRIAL_UNIT_TEXT, 0o644), (WATCHDOG_UNIT, WATCHDOG_UNIT_TEXT, 0o644),
         (GENERATOR, GENERATOR_TEXT, 0o755))
# enabled units: (symlink in the BE, unit name)
LINKS = ((WANTS, UNIT_NAME),
         (f"etc/systemd/system/multi-user.target.wants/{TRIAL_UNIT_NAME}", TRIAL_UNIT_NAME),
         (f"etc/systemd/system/boot-complete.target.requires/{TRIAL_UNIT_NAME}",
          TRIAL_UNIT_NAME),
         (f"etc/systemd/system/sysinit.target.wants/{WATCHDOG_UNIT_NAME}", WATCHDOG_UNIT_NAME))


# what a trial boot needs in the BE on trial (activate --trial puts them in: issue 23.7)
TRIAL_FILES = tuple(f for f in FILES if f[0] in (TRIAL_UNIT, WATCHDOG_UNIT, GENERATOR))
TRIAL_LINKS = tuple(link for link in LINKS if link[1] in (TRIAL_UNIT_NAME, WATCHDOG_UNIT_NAME))


def install(root: Path, *, dry_run: bool = False, out: TextIO | None = None,
            files: tuple[tuple[str, str, int], ...] = FILES,
            links: tuple[tuple[str, str], ...] = LINKS) -> bool:
    """Install the apt hook and the units (enabled) into the BE tree at ``root``
    (idempotent; ``files`` and ``links``: only those). True when something was written."""
    wrote = False
    say = out if out is not None else sys.stdout
    for rel, text, mode in files:
        try:
            if confined.read_text(root, rel, errors="replace") == text:
                continue
        except OSError:
            pass
        wrote = True
        if dry_run:
            print(f"would install {root / rel}", file=say)
            continue
        confined.write_file(root, rel, text.encode("utf-8"), mode=mode, fsync=False)
    for rel, name in links:
        target = f"../{name}"  # relative: right in the BE's tree wherever it is mounted
        if confined.readlink(root, rel) != target:
            wrote = True
            if dry_run:
                print(f"would enable {name} in {root}", file=say)
            else:
                confined.symlink(root, rel, target)
    return wrote


def install_trial(root: Path, *, dry_run: bool = False, out: TextIO | None = None) -> bool:
    """Install what a trial boot runs (``beadm-trial.service``, the watchdog unit, the
    generator; enabled) into the BE tree at ``root``: a BE made by the old shell beadm, with
    ``--backend none`` or received from another machine has none. True when something was
    written."""
    return install(root, dry_run=dry_run, out=out, files=TRIAL_FILES, links=TRIAL_LINKS)


def start_now(runner: Runner, *, systemd: Path = Path("/run/systemd/system")) -> str | None:
    """In the running system: load and start the unit so its ExecStop runs at this boot's
    shutdown. None when done (or no systemd runs); else a warning."""
    if runner.dry_run or not systemd.is_dir():
        return None
    try:
        runner.run(["systemctl", "daemon-reload"])
        runner.run(["systemctl", "start", UNIT_NAME])
    except BeadmError as exc:
        return f"{UNIT_NAME} not started ({exc}): it starts at the next boot"
    return None
