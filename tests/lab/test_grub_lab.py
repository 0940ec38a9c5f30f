"""The GRUB backend on real OpenZFS and real FAT32 ESPs (lab VM, either boot mode), checked
with GRUB's own tools from the image: ``grub-script-check`` parses beadm's custom.cfg as GRUB
would, ``grub-editenv`` reads the grubenv beadm wrote (``next_entry`` of ``activate -t``).

Run: ``lab/lab test -q tests/lab/test_grub_lab.py``."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from beadm.backend import BeRef
from beadm.esp.host import SystemHost
from beadm.grub.backend import GrubBackend
from beadm.runner import SubprocessRunner

POOL = "grubtest"
KVER = "6.1.0-99-test"
GRUB_CFG = """\
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${{next_entry}}" ] ; then
   set default="${{next_entry}}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi
menuentry 'Proxmox VE GNU/Linux' --id 'gnulinux-simple-x' {{
	search --no-floppy --fs-uuid --set=root {uuid}
	linux /vmlinuz-{kver} root=ZFS={pool}/ROOT/a ro root=ZFS={pool}/ROOT/a boot=zfs
	initrd /initrd.img-{kver}
}}
### BEGIN /etc/grub.d/41_custom ###
if [ -f  ${{config_directory}}/custom.cfg ]; then
  source ${{config_directory}}/custom.cfg
elif [ -z "${{config_directory}}" -a -f  $prefix/custom.cfg ]; then
  source $prefix/custom.cfg
fi
### END /etc/grub.d/41_custom ###
"""


def in_esp(uuid: str, sh: Callable[..., str], cmd: str) -> str:
    script = (f"mkdir -p /run/grbt && mount /dev/disk/by-uuid/{uuid} /run/grbt && "
              f"cd /run/grbt && {cmd}")
    return sh("unshare", "--mount", "--propagation", "private", "sh", "-c", script)


@pytest.fixture
def machine(pool_disks: list[Path], esps: list[tuple[Path, str]], sh: Callable[..., str],
            tmp_path: Path) -> Iterator[tuple[GrubBackend, list[str]]]:
    alt = tmp_path / "alt"
    sh("zpool", "create", "-f", "-R", str(alt), "-O", "mountpoint=none", POOL,
       str(pool_disks[0]))
    try:
        sh("zfs", "create", "-o", "canmount=off", f"{POOL}/ROOT")
        sh("zfs", "create", "-o", "mountpoint=/", "-o", "canmount=noauto", f"{POOL}/ROOT/a")
        sh("zfs", "mount", f"{POOL}/ROOT/a")
        (alt / "boot").mkdir()
        (alt / "etc/kernel").mkdir(parents=True)
        (alt / "etc/default/grub.d").mkdir(parents=True)
        (alt / f"boot/vmlinuz-{KVER}").write_bytes(b"K" * (3 << 20))
        (alt / f"boot/initrd.img-{KVER}").write_bytes(b"I" * (5 << 20))
        (alt / "etc/kernel/cmdline").write_text(f"root=ZFS={POOL}/ROOT/a boot=zfs quiet\n")
        (alt / "etc/default/grub.d/zfs.cfg").write_text(
            f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX root=ZFS={POOL}/ROOT/a boot=zfs"\n')
        sh("zfs", "umount", f"{POOL}/ROOT/a")
        sh("zfs", "snapshot", f"{POOL}/ROOT/a@s")
        sh("zfs", "clone", "-o", "mountpoint=/", "-o", "canmount=noauto",
           f"{POOL}/ROOT/a@s", f"{POOL}/ROOT/b")
        uuids = [u for _, u in esps]
        for u in uuids:  # what proxmox-boot-tool init + refresh leave in GRUB mode
            cfg = GRUB_CFG.format(uuid=u, kver=KVER, pool=POOL).replace("'", "'\\''")
            in_esp(u, sh, "mkdir -p grub && grub-editenv grub/grubenv create && "
                          f"printf '%s' '{cfg}' > grub/grub.cfg && cd / && umount /run/grbt")
        etc = tmp_path / "etc"
        etc.mkdir()
        (etc / "proxmox-boot-uuids").write_text("\n".join(uuids) + "\n")
        runner = SubprocessRunner()
        yield GrubBackend(runner, host=SystemHost(runner, etc_kernel=etc,
                                                  efivars=tmp_path / "efivars")), uuids
    finally:
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)


def nothing_mounted(uuids: list[str]) -> None:
    table = Path("/proc/self/mountinfo").read_text()
    assert f"{POOL}/ROOT" not in table
    for u in uuids:
        assert f" {Path(f'/dev/disk/by-uuid/{u}').resolve()} " not in table


def test_grub_backend_on_real_zfs_and_fat(machine: tuple[GrubBackend, list[str]],
                                          sh: Callable[..., str]) -> None:
    backend, uuids = machine
    a, b = BeRef("a", f"{POOL}/ROOT/a"), BeRef("b", f"{POOL}/ROOT/b", "clone of a")
    bes = [a, b]
    backend.init(a)
    backend.post_create(b)
    nothing_mounted(uuids)
    zfs_cfg = sh("sh", "-c", f"d=$(mktemp -d); mount -t zfs -o ro,zfsutil {POOL}/ROOT/b $d; "
                 "cat $d/etc/default/grub.d/zfs.cfg $d/etc/kernel/cmdline; umount $d")
    assert f"root=ZFS={POOL}/ROOT/b boot=zfs\"" in zfs_cfg
    assert f"\nroot=ZFS={POOL}/ROOT/b boot=zfs quiet" in zfs_cfg
    assert backend.boot_state(bes).next_boot == "a"  # grub.cfg's first entry: Proxmox's
    backend.activate(b, temporary=False)
    nothing_mounted(uuids)
    for u in uuids:
        out = in_esp(u, sh, "grub-script-check grub/custom.cfg && grub-script-check "
                            "grub/grub.cfg && cat grub/custom.cfg && ls beadm && "
                            "stat -c %s grub/grubenv && cd / && umount /run/grbt")
        assert f"set default='beadm-b-{KVER}'" in out
        assert f"search --no-floppy --fs-uuid --set=root {u}" in out
        assert f"root=ZFS={POOL}/ROOT/b boot=zfs quiet" in out
        assert out.count(f"-vmlinuz-{KVER}") >= 2 and out.rstrip().endswith("1024")
    assert backend.boot_state(bes).next_boot == "b"
    assert backend.check(bes).problems == ()
    backend.activate(a, temporary=True)
    for u in uuids:  # GRUB's own tool reads the block beadm wrote
        env = in_esp(u, sh, "grub-editenv grub/grubenv list; cd / && umount /run/grbt")
        assert f"next_entry=beadm-a-{KVER}" in env.splitlines()
    st = backend.boot_state(bes)
    assert (st.next_boot, st.once) == ("b", "a")
    backend.activate(a, temporary=False)
    for u in uuids:
        env = in_esp(u, sh, "grub-editenv grub/grubenv list; cd / && umount /run/grbt")
        assert "next_entry" not in env
    backend.post_destroy(b)
    for u in uuids:
        out = in_esp(u, sh, "cat grub/custom.cfg; ls beadm; cd / && umount /run/grbt")
        assert "beadm-b-" not in out and f"beadm-a-{KVER}" in out
    assert backend.check([a]).problems == ()
    nothing_mounted(uuids)


FIXTURE = Path("/src/lab/fixtures/proxmox-boot-tool")


def test_fixture_grub_mode_with_real_grub_keeps_beadm_menu(
        pool_disks: list[Path], sh: Callable[..., str], tmp_path: Path) -> None:
    """The proxmox-boot-tool fixture's GRUB mode with the image's real GRUB (legacy BIOS VM:
    run without --uefi): ``init`` runs grub-install i386-pc into a disk laid out as Proxmox's
    (p1 BIOS boot, p2 ESP), the ESP sync runs the real update-grub with the ESP on /boot; the
    grub.cfg that grub-mkconfig writes sources custom.cfg; beadm's custom.cfg and grubenv
    survive a second refresh, and GRUB's own tools accept them."""
    assert not Path("/sys/firmware/efi").exists(), "run this VM without --uefi"
    disk = pool_disks[1]
    script = ("label: gpt\nsize=1MiB, type=21686148-6449-6E6F-744E-656564454649\n"
              "size=300MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n")
    subprocess.run(["sfdisk", "-q", str(disk)], input=script, text=True, check=True)
    sh("udevadm", "settle")
    part = Path(f"{disk}-part2")
    sh("mkfs.vfat", "-F", "32", "-i", "4242AAAA", str(part))
    sh("udevadm", "settle")
    uuid = "4242-AAAA"
    uuids = Path("/etc/kernel/proxmox-boot-uuids")
    had = uuids.read_text() if uuids.exists() else None
    try:
        out = sh("python3", str(FIXTURE), "init", str(part))
        print(out)
        assert "Installing grub i386-pc target.." in out
        out = sh("python3", str(FIXTURE), "sync-esps")  # what the hook zz-proxmox-boot does
        print(out)
        listing = in_esp(uuid, sh, "ls -1 . grub grub/i386-pc/core.img; stat -c %s "
                                   "grub/grubenv; cat grub/grub.cfg; cd / && umount /run/grbt")
        kver = sh("uname", "-r").strip()
        assert f"vmlinuz-{kver}" in listing and "core.img" in listing
        assert "\n1024\n" in listing
        assert "source $prefix/custom.cfg" in listing  # 41_custom, from the real grub-mkconfig
        assert f"linux\t/vmlinuz-{kver}" in listing
        # beadm on this ESP: a BE on real ZFS, its menu and a one-shot
        alt = tmp_path / "alt"
        sh("zpool", "create", "-f", "-R", str(alt), "-O", "mountpoint=none", POOL,
           str(pool_disks[0]))
        sh("zfs", "create", "-o", "canmount=off", f"{POOL}/ROOT")
        sh("zfs", "create", "-o", "mountpoint=/", f"{POOL}/ROOT/a")
        (alt / "boot").mkdir()
        (alt / "etc/kernel").mkdir(parents=True)
        (alt / f"boot/vmlinuz-{KVER}").write_bytes(b"K" * (1 << 20))
        (alt / f"boot/initrd.img-{KVER}").write_bytes(b"I" * (2 << 20))
        (alt / "etc/kernel/cmdline").write_text(f"root=ZFS={POOL}/ROOT/a boot=zfs\n")
        sh("zfs", "umount", f"{POOL}/ROOT/a")
        etc = tmp_path / "etc"
        etc.mkdir()
        (etc / "proxmox-boot-uuids").write_text(f"{uuid}\n")
        runner = SubprocessRunner()
        backend = GrubBackend(runner, host=SystemHost(runner, etc_kernel=etc,
                                                      efivars=tmp_path / "efivars"))
        a = BeRef("a", f"{POOL}/ROOT/a")
        backend.activate(a, temporary=False)
        backend.activate(a, temporary=True)
        mine = "cat grub/custom.cfg; grub-editenv grub/grubenv list"
        before = in_esp(uuid, sh, f"{mine}; cd / && umount /run/grbt")
        assert f"next_entry=beadm-a-{KVER}" in before
        sh("python3", str(FIXTURE), "sync-esps")  # a refresh: grub.cfg regenerated
        after = in_esp(uuid, sh, f"grub-script-check grub/custom.cfg && {mine} && "
                                 "cat grub/grub.cfg; cd / && umount /run/grbt")
        assert after.startswith(before)
        assert "source $prefix/custom.cfg" in after[len(before):]
        assert backend.check([a]).problems == ()
    finally:
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)
        if had is None:
            uuids.unlink(missing_ok=True)
        else:
            uuids.write_text(had)
