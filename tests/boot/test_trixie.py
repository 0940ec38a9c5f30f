"""Debian 13 / Proxmox VE 9 (issue 11 item 8): the .deb on trixie, against real OpenZFS.

Host side: the cached trixie tree (lab/trixie/trixie.py: debootstrap minbase, main+contrib, from
the host's apt mirror) is copied twice. In the first copy packaging/build-deb builds the .deb on
Debian 13 (its build deps from the archive, lintian 2.12x clean). That .deb is installed into the
second, fresh copy with apt from the trixie archive, so that its Depends really resolve there
(python3 = 3.13, zfsutils-linux 2.3 from contrib, dosfstools, util-linux). The second copy
becomes an ext4 disk.

VM side (a ``lab run --uefi`` VM: Debian 12 kernel with its OpenZFS 2.1 module, two ESPs): the
ESPs are laid out as PVE 9's ``proxmox-boot-tool init`` leaves them (systemd-boot, ``default
proxmox-*``, the ``memtest86+x64.efi.conf`` entry with an ``efi`` key and no ``linux`` line),
then everything runs inside the trixie tree (lab/trixie/enter: its own mount namespace with the
tree as root, /dev, /sys and udev's database from the VM) with trixie's OWN binaries: python3.13
runs the packaged beadm, and trixie's zfsutils 2.3 talks to the VM's 2.1 module (their ioctls
are compatible for everything beadm and this test use: create, mount, snapshot, clone, promote,
set/get, bootfs, destroy). It makes a pool with BE pve-1, then ``beadm version``, ``--help``,
``init``, ``create -e``, ``activate``, ``list``, ``check``, ``sync``, and checks that the memtest
entry and its program are byte for byte what they were.

Marked ``boot`` (host-side, drives a VM; run by ./run-tests' boot tier). Needs the network (the
trixie archive) like the rest of the lab builds.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import labkit  # lab/labkit.py and lab/trixie/trixie.py: on pytest's pythonpath (pyproject.toml)
import pytest
import trixie

REPO = Path(__file__).resolve().parents[2]

# Runs in the VM (Debian 12, as root, cwd /src) under `sh -c`; every check prints "FAIL: ..."
# and exits non-zero; the last line on success is TRIXIE-OK.
IN_VM = r"""
set -u
fail() { echo "FAIL: $*"; exit 1; }
T=/mnt/trixie
mkdir -p $T && mount /dev/disk/by-id/virtio-trixie $T || fail "cannot mount the trixie disk"
modprobe vfat 2>/dev/null
# The ESPs as PVE 9's proxmox-boot-tool init leaves them (the program's path is assumed).
for n in 1 2; do
    d=/run/esp$n; mkdir -p $d
    mount /dev/disk/by-id/virtio-esp$n-part1 $d || fail "ESP $n"
    mkdir -p $d/EFI/systemd $d/EFI/BOOT $d/EFI/proxmox $d/EFI/memtest86 $d/loader/entries
    printf 'MZ systemd-boot stand-in\n' > $d/EFI/systemd/systemd-bootx64.efi
    cp $d/EFI/systemd/systemd-bootx64.efi $d/EFI/BOOT/BOOTX64.EFI
    printf 'timeout 3\ndefault proxmox-*\n' > $d/loader/loader.conf
    printf 'title Memory test (memtest86+x64.efi)\nefi /EFI/memtest86/memtest86+x64.efi\n' \
        > "$d/loader/entries/memtest86+x64.efi.conf"
    printf 'MZ memtest86+ stand-in\n' > $d/EFI/memtest86/memtest86+x64.efi
    umount $d
done
exec /src/lab/trixie/enter $T --bind /run/udev:/run/udev -- bash -c '
set -u
fail() { echo "FAIL: $*"; zpool destroy -f rpool 2>/dev/null; exit 1; }
step() { echo "--- $*"; }
. /etc/os-release
[ "$VERSION_ID" = 13 ] || fail "not Debian 13: $PRETTY_NAME"
echo "$PRETTY_NAME, $(python3 --version), $(zfs version | tr "\n" " ")"
python3 -c "import sys; assert sys.version_info[:2] == (3, 13)" || fail "python3 != 3.13"
zfs version | head -1 | grep -q "^zfs-2\.3" || fail "not trixie zfsutils 2.3"
[ "$(command -v beadm)" = /usr/sbin/beadm ] || fail "beadm is $(command -v beadm)"
[ "$(python3 -c "import beadm; print(beadm.__file__)")" = \
  /usr/lib/python3/dist-packages/beadm/__init__.py ] || fail "python3 imports another beadm"
[ -x /etc/kernel/postinst.d/zzz-beadm ] || fail "kernel hook missing"

step "beadm version, --help"
beadm version || fail "beadm version"
beadm --help | grep -q "activate" || fail "beadm --help"

step "a pool with BE pve-1 (trixie zpool/zfs on the VM module)"
zpool create -f -R /mnt/be -O mountpoint=none rpool /dev/disk/by-id/virtio-pool1 \
    || fail "zpool create"
zfs create -o canmount=off rpool/ROOT || fail "zfs create ROOT"
zfs create -o mountpoint=/ -o canmount=noauto rpool/ROOT/pve-1 || fail "zfs create pve-1"
zfs mount rpool/ROOT/pve-1 || fail "zfs mount"
K=6.14.8-2-pve
mkdir -p /mnt/be/boot /mnt/be/etc/kernel
head -c 2000000 /dev/urandom > /mnt/be/boot/vmlinuz-$K
head -c 3000000 /dev/urandom > /mnt/be/boot/initrd.img-$K
echo "root=ZFS=rpool/ROOT/pve-1 boot=zfs quiet" > /mnt/be/etc/kernel/cmdline
zfs umount rpool/ROOT/pve-1 || fail "zfs umount"
zpool set bootfs=rpool/ROOT/pve-1 rpool || fail "zpool set bootfs"
printf "1111-AAAA\n2222-BBBB\n" > /etc/kernel/proxmox-boot-uuids

memtest() {  # the memtest entry and program on every ESP, hashed
    for u in 1111-AAAA 2222-BBBB; do
        unshare --mount --propagation private sh -c "mkdir -p /run/m && \
            mount -o ro /dev/disk/by-uuid/$u /run/m && cd /run/m && \
            sha256sum loader/entries/memtest86+x64.efi.conf EFI/memtest86/memtest86+x64.efi \
            && cat loader/loader.conf" || echo "cannot read ESP $u"
    done
}
before=$(memtest)
B="beadm --root rpool/ROOT"
step "list before init"
$B list || fail "list"
step "init, create, activate"
$B init pve-1 || fail "init"
$B create -e pve-1 -d "on trixie" pve-2 || fail "create"
$B activate pve-2 || fail "activate"
step "list"
$B list || fail "list"
$B list -H | awk -F"\t" "\$1 == \"pve-2\" && \$2 ~ /R/ {ok=1} END {exit !ok}" \
    || fail "pve-2 is not the next-boot BE: $($B list -H)"
step "check"
$B check || fail "check reports problems"
step "sync, check"
$B sync || fail "sync"
$B check || fail "check after sync"
after=$(memtest)
echo "$after"
[ "$(grep -v "^default" <<<"$before")" = "$(grep -v "^default" <<<"$after")" ] \
    || fail "the memtest entry or its program changed: $before // $after"
grep -qx "default beadm-pve-2-$K.conf" <<<"$after" || fail "loader.conf default not pve-2"
zpool destroy rpool || fail "zpool destroy"
echo TRIXIE-OK
'
"""


def _run(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(argv)} exited {res.returncode}:\n" \
        f"{res.stdout[-4000:]}{res.stderr[-4000:]}"
    return res


def _enter(tree: Path, *binds: tuple[Path, str], script: str,
           timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``script`` (sh) as root in ``tree`` (lab/trixie/enter), with the apt download cache."""
    argv = [str(trixie.ENTER), str(tree), "--bind",
            f"{trixie.apt_archives()}:/var/cache/apt/archives"]
    for src, dest in binds:
        argv += ["--bind", f"{src}:{dest}"]
    return _run([*argv, "--", "sh", "-c",
                 "export DEBIAN_FRONTEND=noninteractive; set -e; " + script], timeout)


def test_deb_builds_installs_with_its_depends_and_runs_on_debian_13_against_real_zfs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    cached = trixie.build_tree()
    apt = "apt-get -q -y -o Dpkg::Use-Pty=0"
    # 1. build on Debian 13: packaging/build-deb installs its build deps, lintian must pass
    build_tree, deb_dir = tmp_path / "build", tmp_path / "deb"
    deb_dir.mkdir()
    _run(["cp", "-a", "--reflink=auto", str(cached), str(build_tree)])
    out = _enter(build_tree, (REPO, "/src"), (deb_dir, "/mnt/deb"),
                 script=f"{apt} update >/dev/null; /src/packaging/build-deb /mnt/deb")
    deb = Path(out.stdout.strip().splitlines()[-1])
    assert deb.parent == Path("/mnt/deb"), out.stdout[-2000:]
    assert "lintian reports errors" not in out.stderr
    shutil.rmtree(build_tree)
    t1 = time.monotonic()
    # 2. install that .deb with apt into a fresh tree: its Depends come from the archive
    tree = tmp_path / "tree"
    _run(["cp", "-a", "--reflink=auto", str(cached), str(tree)])
    inst = _enter(tree, (deb_dir, "/mnt/deb"),
                  script=f"{apt} update >/dev/null; {apt} install /mnt/deb/{deb.name}; "
                         "dpkg -L beadm | grep -x /usr/lib/systemd/system/beadm-reassert.service;"
                         " dpkg-query -W python3 zfsutils-linux dosfstools util-linux beadm")
    versions = dict(line.split("\t") for line in inst.stdout.strip().splitlines()[-5:])
    assert versions["python3"].startswith("3.13"), versions
    assert versions["zfsutils-linux"].startswith("2.3"), versions
    assert versions["beadm"] and versions["dosfstools"] and versions["util-linux"], versions
    img = tmp_path / "trixie.img"
    size = int(_run(["du", "-sm", str(tree)]).stdout.split()[0])
    _run(["truncate", "-s", f"{size * 13 // 10 + 256}M", str(img)])
    _run(["mkfs.ext4", "-q", "-F", "-L", "trixie", "-E", "root_owner=0:0", "-d", str(tree),
          str(img)])
    shutil.rmtree(tree)
    t2 = time.monotonic()
    # 3. in a lab VM, against real OpenZFS and FAT32 ESPs
    rc = labkit.LabRun(command=["sh", "-c", IN_VM], disks=1, esps=2, uefi=True, timeout=900,
                       extra_disks=[labkit.Disk(img, "trixie", snapshot=True)]).run()
    t3 = time.monotonic()
    text = capsys.readouterr().out
    with capsys.disabled():
        print(f"\ntrixie: tree + build on 13 {t1 - t0:.0f} s, apt install + image "
              f"{t2 - t1:.0f} s, VM (slot wait included) {t3 - t2:.0f} s")
    assert rc == 0, text[-8000:]
    assert "TRIXIE-OK" in text, text[-8000:]
