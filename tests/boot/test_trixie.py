"""Debian 13 / Proxmox VE 9 (issue 11 item 8): the .deb on trixie, against real OpenZFS.

Host side: the cached trixie tree (lab/trixie/trixie.py: debootstrap minbase, main+contrib, from
the host's apt mirror) and the cached copy of it with beadm's build dependencies and lintian
installed (lab/trixie/build-deps). In a copy of the latter packaging/build-deb builds the .deb on
Debian 13; the same .deb is also built on the host (Debian 12). Both releases' lintian
(``-I --pedantic``: Debian 13's in the tree, Debian 12's on the host) must find no tag in either
.deb, every script of both must keep the shebang of its source (Debian 13's dh_python3 rewrites
``#!/usr/bin/python3 -IS``), and neither build may warn about the licence's form in
pyproject.toml. The source package (``dpkg-source -b``) must be clean for Debian 13's lintian
(Standards-Version current). The .deb built on 13 is installed into a fresh copy of the trixie
tree with apt from the trixie archive, so that its Depends really resolve there (python3 = 3.13,
zfsutils-linux 2.3 from contrib, dosfstools, util-linux). That copy becomes an ext4 disk.

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
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import debbuild  # tests/boot/debbuild.py: the host build, SCRIPTS, lintian_tags
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


@dataclass(frozen=True)
class Builds:
    """The .deb built on each release, the build logs, and each release's lintian on each."""

    on12: Path
    on13: Path
    log12: str
    log13: str
    lintian12: dict[str, str]  # "on12"/"on13" -> Debian 12's lintian output on that .deb
    lintian13: dict[str, str]  # the same with Debian 13's lintian
    lintian13_source: str  # Debian 13's lintian on the source package (.dsc)
    versions13: str  # dpkg-query of the 13 tree's lintian, debhelper, dh-python, setuptools
    seconds: float


# Debian 12's lintian on a .deb built on Debian 13 only: its screen for dist-info metadata needs
# a RECORD file, which Debian 13's dh_python3 no longer ships, so it takes top_level.txt for
# documentation (Debian 13's lintian does not; debian/lintian-notes.md).
ONLY_12_ON_13_BUILD = (
    "I: beadm: package-contains-documentation-outside-usr-share-doc "
    f"[usr/lib/python3/dist-packages/beadm-{debbuild.deb_version()}.dist-info/top_level.txt]")


def lint(path: str) -> str:
    """sh: lintian as build-deb runs it on ``path``, then its exit status (LINTIAN-EXIT n)."""
    return f"rc=0; lintian -I --pedantic {path} 2>&1 || rc=$?; echo LINTIAN-EXIT $rc"


@pytest.fixture(scope="module")
def builds() -> Iterator[Builds]:
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="beadm-trixie-test-"))
    try:
        out12, out13, src = tmp / "deb12", tmp / "deb13", tmp / "src"
        for d in (out12, out13, src):
            d.mkdir()
        on12, log12 = debbuild.build(out12)
        # the checkout as build-deb copies it (tracked and untracked-not-ignored files)
        files = _run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                      "--exclude-standard"]).stdout.split("\0")
        (src / "beadm").mkdir()
        for f in filter(None, files):
            if (REPO / f).exists() or (REPO / f).is_symlink():
                (src / "beadm" / f).parent.mkdir(parents=True, exist_ok=True)
                _run(["cp", "-a", str(REPO / f), str(src / "beadm" / f)])
        tree = tmp / "build"
        _run(["cp", "-a", "--reflink=auto", str(trixie.build_deps_tree()), str(tree)])
        built = _enter(tree, (REPO, "/src"), (out13, "/mnt/deb"),
                       script="/src/packaging/build-deb /mnt/deb")
        assert "installing build dependencies" not in built.stderr, built.stderr[-2000:]
        on13 = out13 / Path(built.stdout.strip().splitlines()[-1]).name
        assert on13.is_file(), built.stdout[-2000:]
        lint13 = {}
        for name, deb, d in (("on12", on12, out12), ("on13", on13, out13)):
            res = _enter(tree, (d, "/mnt/lint"), script=lint(f"/mnt/lint/{deb.name}"))
            lint13[name] = res.stdout
        source = _enter(tree, (src, "/mnt/src"), script=(
            "cd /mnt/src && dpkg-source -b beadm >/dev/null; "
            + lint(f"/mnt/src/beadm_{debbuild.deb_version()}.dsc")))
        versions = _enter(tree, script="dpkg-query -W lintian debhelper dh-python "
                                       "python3-setuptools").stdout
        lint12 = {}
        for name, deb in (("on12", on12), ("on13", on13)):
            res = subprocess.run(["sh", "-c", lint(str(deb))],
                                 capture_output=True, text=True, check=False)
            lint12[name] = res.stdout
        yield Builds(on12, on13, log12, built.stderr, lint12, lint13, source.stdout, versions,
                     time.monotonic() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_both_debs_keep_every_shebang(builds: Builds, tmp_path: Path) -> None:
    print(builds.versions13)
    for name, deb in (("on12", builds.on12), ("on13", builds.on13)):
        root = tmp_path / name
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        assert debbuild.first_lines(root) == debbuild.expected_first_lines(), name


def test_both_debs_are_lintian_clean_on_debian_12_and_13(builds: Builds) -> None:
    assert "lintian reports errors" not in builds.log13
    # build-deb's own run on Debian 13 (its .changes)
    in_build = debbuild.unexpected_tags(builds.log13.split("build-deb: lintian", 1)[-1], "13")
    assert not in_build, in_build
    assert "lintian 2.12" in builds.versions13.replace("\t", " "), builds.versions13
    for release, outputs in (("12", builds.lintian12), ("13", builds.lintian13)):
        for name, out in outputs.items():
            print(f"Debian {release}'s lintian on the .deb built {name}:\n{out}")
            assert "LINTIAN-EXIT 0" in out, (release, name, out)
            tags = debbuild.unexpected_tags(out, release)
            if (release, name) == ("12", "on13"):
                tags = [t for t in tags if t != ONLY_12_ON_13_BUILD]
            assert not tags, (release, name, out)


def test_source_package_is_lintian_clean_on_debian_13(builds: Builds) -> None:
    print(builds.lintian13_source)
    out = builds.lintian13_source
    assert "LINTIAN-EXIT 0" in out and not debbuild.lintian_tags(out), out


def test_no_setuptools_warning_about_the_licence_on_either_release(builds: Builds) -> None:
    for log in (builds.log12, builds.log13):
        assert "SetuptoolsDeprecationWarning" not in log, log[-6000:]
        assert "License classifiers are deprecated" not in log, log[-6000:]
    assert "python3-setuptools\t78." in builds.versions13, builds.versions13


def test_deb_builds_installs_with_its_depends_and_runs_on_debian_13_against_real_zfs(
        builds: Builds, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t1 = time.monotonic()
    cached = trixie.build_tree()
    apt = "apt-get -q -y -o Dpkg::Use-Pty=0"
    deb_dir, deb = builds.on13.parent, builds.on13
    # 2. install that .deb with apt into a fresh tree: its Depends come from the archive
    tree = tmp_path / "tree"
    _run(["cp", "-a", "--reflink=auto", str(cached), str(tree)])
    inst = _enter(tree, (deb_dir, "/mnt/deb"),
                  script=f"{apt} update >/dev/null; {apt} install /mnt/deb/{deb.name}; "
                         "dpkg -L beadm | grep -x /usr/lib/systemd/system/beadm-reassert.service;"
                         " echo \"SHEBANG $(head -1 /usr/sbin/beadm)\";"
                         " dpkg-query -W python3 zfsutils-linux dosfstools util-linux beadm")
    # the installed command keeps its shebang (Debian 13's dh_python3 would drop -IS)
    shebang = [ln for ln in inst.stdout.splitlines() if ln.startswith("SHEBANG ")]
    assert shebang == ["SHEBANG #!/usr/bin/python3 -IS"], inst.stdout[-2000:]
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
        print(f"\ntrixie: builds on 12 and 13 + lintian {builds.seconds:.0f} s, apt install + "
              f"image {t2 - t1:.0f} s, VM (slot wait included) {t3 - t2:.0f} s")
    assert rc == 0, text[-8000:]
    assert "TRIXIE-OK" in text, text[-8000:]
