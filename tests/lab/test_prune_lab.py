"""Automatic snapshots and prune on real OpenZFS (lab VM), made by real apt runs.

apt-get installs, upgrades and removes tiny local packages with beadm's own
``DPkg::Pre-Install-Pkgs`` lines (from ``persist.APT_TEXT``, passed with ``apt-get -c``;
only ``beadm apt-hook`` gets ``--root``, since ``/`` in the VM is not ZFS), so the
snapshots are made by the hook command apt really runs, from apt's real version-3 input.
Then a BE is cloned from the oldest one, and ``prune`` (``-n``, then for real, then
again) must destroy exactly what the policy says and never touch what beadm did not make.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
from labpool import create_pool, device_digest

from beadm.backend import BeRef
from beadm.cli import Deps, main
from beadm.esp import persist
from beadm.esp.efivars import DEFAULT, EFIVARS, ONESHOT
from beadm.esp.host import SystemHost
from beadm.runner import Runner, SubprocessRunner
from beadm.sdboot.backend import SystemdBootBackend

POOL = "rpool"
ROOT = f"{POOL}/ROOT"
ALT = "/mnt/lab"
CONF = Path("/etc/beadm/beadm.conf")
KERNEL = "proxmox-kernel-9.9.9-1-pve-signed"  # an empty package with a kernel's name


def sh(*argv: str, stdin: str | None = None) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False, input=stdin)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr}")
    return res.stdout


def beadm(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(["--root", ROOT, "--backend", "none", *args],
              deps=Deps(stdin=io.StringIO(), stdout=out, stderr=err))
    return rc, out.getvalue(), err.getvalue()


def prop(ds: str, p: str) -> str:
    return sh("zfs", "get", "-H", "-p", "-o", "value", p, ds).strip()


def snaps() -> list[str]:
    """Snapshots of the BE root pve-1, oldest first (the names after @)."""
    out = sh("zfs", "list", "-H", "-p", "-t", "snapshot", "-o", "name", "-s", "createtxg",
             "-d", "1", f"{ROOT}/pve-1")
    return [line.partition("@")[2] for line in out.split()]


def everything() -> set[str]:
    return set(sh("zfs", "list", "-H", "-t", "all", "-o", "name", "-r", POOL).split())


def deb(tmp: Path, name: str, version: str) -> Path:
    d = tmp / f"{name}-{version}"
    (d / "DEBIAN").mkdir(parents=True)
    (d / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: beadm lab <lab@example.invalid>\nDescription: beadm lab package\n")
    out = tmp / f"{name}_{version}_all.deb"
    sh("dpkg-deb", "--build", "--root-owner-group", str(d), str(out))
    return out


@pytest.fixture
def pool(pool_disks: list[Path], tmp_path: Path) -> Iterator[Path]:
    """rpool/ROOT/pve-1 (with pve-1/var) booting next; beadm.conf with auto_snapshot on;
    an apt config file with beadm's hook lines. Yields that apt config file."""
    create_pool(POOL, ALT, pool_disks[0])
    conf = tmp_path / "apt.conf"
    lines = [ln for ln in persist.APT_TEXT.splitlines()
             if ln.startswith(("DPkg::Pre-Install-Pkgs", "DPkg::Tools::Options::BEADM_HOOK"))]
    assert len(lines) == 2, lines
    conf.write_text("\n".join(lines).replace(
        "beadm apt-hook", f"beadm --root {ROOT} --backend none apt-hook") + "\n")
    try:
        sh("zfs", "create", "-o", "canmount=off", "-o", "mountpoint=/rpool/ROOT", ROOT)
        sh("zfs", "create", "-o", "canmount=noauto", "-o", "mountpoint=/", f"{ROOT}/pve-1")
        sh("zfs", "create", "-o", "canmount=noauto", f"{ROOT}/pve-1/var")
        sh("zpool", "set", f"bootfs={ROOT}/pve-1", POOL)
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text("auto_snapshot = yes\nkeep = 10\npool_min_free = 1%\n")
        yield conf
    finally:
        CONF.unlink(missing_ok=True)
        for pkg in ("beadm-lab-a", KERNEL):
            subprocess.run(["dpkg", "--purge", pkg], capture_output=True, check=False)
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)


def apt(conf: Path, *args: str) -> str:
    return sh("apt-get", "-c", str(conf), "-y", "-q", "-o", "Dpkg::Use-Pty=0", *args)


def test_apt_hook_snapshots_then_prune_keeps_policy(pool: Path, tmp_path: Path) -> None:
    conf = pool
    # what beadm did not make: a snapshot of its own name, one named like an automatic one
    # (no mark), one whose mark is only inherited from the BE
    sh("zfs", "snapshot", "-r", f"{ROOT}/pve-1@mine")
    sh("zfs", "snapshot", "-r", f"{ROOT}/pve-1@beadm-auto-20000101-000000")

    # four apt runs: install, upgrade, a kernel, a removal
    a1, a2, k = deb(tmp_path, "beadm-lab-a", "1.0"), deb(tmp_path, "beadm-lab-a", "2.0"), \
        deb(tmp_path, KERNEL, "9.9.9-1")
    outputs = [apt(conf, "install", str(a1)), apt(conf, "install", str(a2)),
               apt(conf, "install", str(k)), apt(conf, "remove", "beadm-lab-a")]
    auto = [s for s in snaps() if s.startswith("beadm-auto-") and s != "beadm-auto-20000101-000000"]
    assert len(auto) == 4, (snaps(), outputs)
    for out, s in zip(outputs, auto, strict=True):
        assert f"beadm: automatic snapshot {ROOT}/pve-1@{s} taken" in out
    desc = [prop(f"{ROOT}/pve-1@{s}", "org.beadm:description") for s in auto]
    assert desc == ["apt: install 1 (beadm-lab-a)", "apt: upgrade 1 (beadm-lab-a)",
                    f"apt: install 1 ({KERNEL})", "apt: remove 1 (beadm-lab-a)"]
    assert [prop(f"{ROOT}/pve-1@{s}", "org.beadm:important") for s in auto] == \
        ["-", "-", "kernel", "-"]
    # recursive: the child's snapshot is there and marked too
    assert all(prop(f"{ROOT}/pve-1/var@{s}", "org.beadm:auto") == "apt" for s in auto)
    # list -s shows what each was for
    rc, listing, _ = beadm("list", "-s")
    assert rc == 0 and "apt: upgrade 1 (beadm-lab-a)" in listing

    # a BE cloned from the oldest automatic snapshot: that snapshot is held
    rc, _, err = beadm("create", "-e", f"pve-1@{auto[0]}", "pve-2")
    assert rc == 0, err
    CONF.write_text("auto_snapshot = yes\nkeep = 1\nkeep_important = 1\npool_min_free = 1%\n")
    before = everything()

    rc, out, err = beadm("prune", "-n", "-v")
    assert rc == 0, err
    assert everything() == before
    lines = out.splitlines()
    rows = {line.split()[0].partition("@")[2]: line for line in lines if line.startswith(ROOT)}
    assert "would destroy" in rows[auto[1]] and "older than the newest 1" in rows[auto[1]]
    assert "keep" in rows[auto[0]] and f"origin of {ROOT}/pve-2" in rows[auto[0]]
    assert "important (kernel)" in rows[auto[2]]
    assert "one of the newest 1" in rows[auto[3]]
    assert set(rows) == set(auto)  # nothing unmarked is even listed
    assert [ln for ln in lines if ln.startswith("would run")] == [
        f"would run: zfs destroy -r {ROOT}/pve-1@{auto[1]}"]

    rc, out, err = beadm("prune", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert [s["destroy"] for s in data["snapshots"]] == [False, False, True, False]
    gone = before - everything()
    assert gone == {f"{ROOT}/pve-1@{auto[1]}", f"{ROOT}/pve-1/var@{auto[1]}"}
    # untouched: ours that were kept, and everything beadm did not make
    for name in (f"{ROOT}/pve-1@mine", f"{ROOT}/pve-1/var@mine",
                 f"{ROOT}/pve-1@beadm-auto-20000101-000000", f"{ROOT}/pve-2"):
        assert name in everything()

    # idempotent: pruning again destroys nothing
    after = everything()
    rc, out, err = beadm("prune")
    assert (rc, out) == (0, ""), err
    assert everything() == after


def test_apt_hook_once_per_apt_run(pool: Path) -> None:
    """Two dpkg sessions of one apt run (unattended-upgrades): one snapshot; the second
    session's kernel makes it important. Both hook runs share the first non-shell
    ancestor (this pytest process), which is how apt's own sessions look to the hook."""
    first = "VERSION 3\n\nzsh 5.8 amd64 none < 5.9 amd64 none /x/zsh_5.9_amd64.deb\n"
    second = f"VERSION 3\n\n{KERNEL} - - none < 9.9 amd64 none /x/k.deb\n"
    hook = f"beadm --root {ROOT} --backend none apt-hook"
    out = sh("sh", "-c", f"{hook} <<'E'\n{first}E\n{hook} <<'E'\n{second}E\n")
    auto = [s for s in snaps() if s.startswith("beadm-auto-")]
    assert len(auto) == 1, (auto, out)
    assert "already taken in this apt run" in out
    assert prop(f"{ROOT}/pve-1@{auto[0]}", "org.beadm:important") == "kernel"
    assert prop(f"{ROOT}/pve-1@{auto[0]}", "org.beadm:description") == "apt: upgrade 1 (zsh)"
    # beadm.conf saying no: the hook reads its input and does nothing
    CONF.write_text("auto_snapshot = no\n")
    before = everything()
    assert sh("sh", "-c", f"{hook} <<'E'\n{first}E\n") == ""
    assert everything() == before


def test_apt_hook_takes_its_snapshot_when_the_prune_fails(pool: Path) -> None:
    """The oldest of two automatic snapshots beyond ``keep`` is held (``zfs hold``), so its
    ``zfs destroy`` would fail: each prune of the hook (before and after its snapshot) keeps
    it with one warning and destroys the others; the hook takes its snapshot and says so."""
    old = [f"{ROOT}/pve-1@beadm-auto-2026010{n}-000000" for n in (1, 2)]
    for name in old:
        sh("zfs", "snapshot", "-r", "-o", "org.beadm:auto=apt", name)
    sh("zfs", "hold", "lab", old[0])
    CONF.write_text("auto_snapshot = yes\nkeep = 1\nkeep_important = 0\npool_min_free = 1%\n")
    hook = f"beadm --root {ROOT} --backend none apt-hook"
    stdin = "VERSION 3\n\nzsh 5.8 amd64 none < 5.9 amd64 none /x/zsh_5.9_amd64.deb\n"
    try:
        res = subprocess.run(["sh", "-c", hook], input=stdin, capture_output=True, text=True,
                             check=False)
        assert res.returncode == 0, res.stderr
        new = [s for s in snaps() if s.startswith("beadm-auto-") and "-2026010" not in s]
        assert len(new) == 1, snaps()
        assert f"automatic snapshot {ROOT}/pve-1@{new[0]} taken" in res.stdout
        held = [ln for ln in res.stderr.splitlines() if "warning" in ln]
        assert held == [f"beadm: warning: prune keeps {old[0]}: {old[0]} has a zfs hold "
                        f"(zfs holds {old[0]})"] * 2, res.stderr
        assert old[0] in everything()
        assert old[1] not in everything()  # the prune went on: keep = 1, the new one stays
        assert prop(f"{ROOT}/pve-1/var@{new[0]}", "org.beadm:auto") == "apt"
    finally:
        sh("zfs", "release", "lab", old[0])


def test_apt_hook_after_the_clock_went_back_keeps_its_snapshot(pool: Path) -> None:
    """Issue 23 item 2, with the VM's real clock set back 400 days (an RTC reset, NTP
    correcting a fast clock): the hook's new snapshot has the oldest ``creation`` (and the
    smallest name), yet it is the newest in the pool (createtxg), so the prune after it
    destroys the oldest one taken before, never the one just taken."""
    old = [f"{ROOT}/pve-1@beadm-auto-2026010{n}-000000" for n in (1, 2)]
    for name in old:
        sh("zfs", "snapshot", "-r", "-o", "org.beadm:auto=apt", name)
    CONF.write_text("auto_snapshot = yes\nkeep = 2\nkeep_important = 0\npool_min_free = 1%\n")
    hook = f"beadm --root {ROOT} --backend none apt-hook"
    stdin = "VERSION 3\n\nzsh 5.8 amd64 none < 5.9 amd64 none /x/zsh_5.9_amd64.deb\n"
    before = int(prop(old[0], "creation"))
    back = 400 * 86400
    sh("date", "-s", f"@{int(time.time()) - back}")
    try:
        res = subprocess.run(["sh", "-c", hook], input=stdin, capture_output=True, text=True,
                             check=False)
    finally:
        sh("date", "-s", f"@{int(time.time()) + back}")
    assert res.returncode == 0, res.stderr
    new = [s for s in snaps() if s.startswith("beadm-auto-") and "-2026010" not in s]
    assert len(new) == 1, (snaps(), res.stdout, res.stderr)
    made = f"{ROOT}/pve-1@{new[0]}"
    assert f"automatic snapshot {made} taken" in res.stdout
    # the clock really went back: the new one looks the oldest by time and by name
    assert int(prop(made, "creation")) < before - back // 2
    assert new[0] < old[0].partition("@")[2]
    assert int(prop(made, "createtxg")) > int(prop(old[1], "createtxg"))
    assert old[0] not in everything() and f"{ROOT}/pve-1/var@{old[0].partition('@')[2]}" \
        not in everything()
    assert old[1] in everything() and made in everything()


# -- automatic BEs and the ESP floor (systemd-boot backend, real FAT32 ESPs) ---------------

BPOOL = "prunebe"
BROOT = f"{BPOOL}/ROOT"
KVER = "6.1.0-90-prune"


class BeLab:
    """A pool whose BE ``a`` runs (a mount table line says so), the lab's ESPs, and beadm's
    CLI in this process with the systemd-boot backend on them."""

    def __init__(self, alt: Path, etc_kernel: Path, efivars: Path, uuids: list[str],
                 mountinfo: Path, conf: Path) -> None:
        self.alt, self.etc_kernel, self.efivars = alt, etc_kernel, efivars
        self.uuids, self.mountinfo, self.conf = uuids, mountinfo, conf

    def backend(self, runner: Runner, out: TextIO | None = None) -> SystemdBootBackend:
        host = SystemHost(runner, etc_kernel=self.etc_kernel, efivars=self.efivars,
                          running_root=self.alt, out=out)
        return SystemdBootBackend(runner, host=host, out=out)

    def cli(self, *argv: str) -> tuple[int, str, str]:
        own = Path("/proc/self/mountinfo").read_text()
        self.mountinfo.write_text(own + f"9990 1 0:999 / / rw - zfs {BROOT}/a rw\n")
        out, err = io.StringIO(), io.StringIO()
        plan: list[TextIO] = []  # where the CLI wants a dry run's plan (stderr with --json)

        def make_runner(dry: bool, o: TextIO) -> SubprocessRunner:
            plan.append(o)
            return SubprocessRunner(dry_run=dry, out=o)

        deps = Deps(make_runner=make_runner,  # type: ignore[arg-type]
                    make_backend=lambda name, r: self.backend(r, plan[-1]),  # type: ignore[arg-type]
                    mountinfo=self.mountinfo, running_root=self.alt,
                    lock_path=Path("/run/prunebe.lock"), stdin=io.StringIO(),
                    stdout=out, stderr=err, config_path=self.conf)
        rc = main(["--root", BROOT, "--backend", "systemd-boot", *argv], deps=deps)
        return rc, out.getvalue(), err.getvalue()

    def ok(self, *argv: str) -> str:
        rc, out, err = self.cli(*argv)
        assert rc == 0, f"beadm {' '.join(argv)}: {rc} {err}"
        return out


def in_be(be: str, script: str) -> None:
    """Run ``script`` with ``$d`` = BE ``be`` mounted read-write."""
    sh("sh", "-c", f"d=$(mktemp -d); mount -t zfs -o zfsutil {BROOT}/{be} $d; {script}; "
       "umount $d; rmdir $d")


def esp_files(uuid: str) -> list[str]:
    """Every file under beadm/ and loader/entries/ of one ESP (read-only, private mount)."""
    script = (f"mkdir -p /run/prunesee && mount -o ro /dev/disk/by-uuid/{uuid} /run/prunesee "
              "&& cd /run/prunesee && find beadm loader/entries -type f 2>/dev/null | sort")
    return sh("unshare", "--mount", "--propagation", "private", "sh", "-c", script).split()


def esp_hashes(uuids: list[str]) -> list[str]:
    return [device_digest(Path(f"/dev/disk/by-uuid/{u}"))
            for u in uuids]


@pytest.fixture
def belab(pool_disks: list[Path], esps: list[tuple[Path, str]],
          tmp_path: Path) -> Iterator[BeLab]:
    alt = tmp_path / "alt"
    create_pool(BPOOL, str(alt), pool_disks[0])
    etc = tmp_path / "etc-kernel"
    etc.mkdir()
    uuids = [u for _, u in esps]
    (etc / "proxmox-boot-uuids").write_text("\n".join(uuids) + "\n")
    efi = EFIVARS if EFIVARS.is_dir() else tmp_path / "efivars"
    efi.mkdir(exist_ok=True)
    lab = BeLab(alt, etc, efi, uuids, tmp_path / "mountinfo", tmp_path / "beadm.conf")
    try:
        sh("zfs", "create", "-o", "canmount=off", BROOT)
        sh("zfs", "create", "-o", "mountpoint=/", "-o", "canmount=noauto", f"{BROOT}/a")
        sh("zfs", "mount", f"{BROOT}/a")
        for rel, data in {f"boot/vmlinuz-{KVER}": b"K" * (1 << 20),
                          f"boot/initrd.img-{KVER}": b"I" * (2 << 20),
                          "etc/kernel/cmdline": f"root=ZFS={BROOT}/a boot=zfs\n".encode()}.items():
            (alt / rel).parent.mkdir(parents=True, exist_ok=True)
            (alt / rel).write_bytes(data)
        sh("zpool", "set", f"bootfs={BROOT}/a", BPOOL)
        yield lab
    finally:
        try:  # the ESPs are shared by the VM's lab tests: take beadm's files away
            backend = lab.backend(SubprocessRunner())
            names = sh("zfs", "list", "-H", "-o", "name", "-d", "1", BROOT).split()[1:]
            for ds in names:
                backend.post_destroy(BeRef(ds.rpartition("/")[2], ds))
            for var in (DEFAULT, ONESHOT):
                if backend.host.efivars.get(var) is not None:
                    backend.host.efivars.delete(var)
        finally:
            subprocess.run(["umount", "/run/prune-um"], capture_output=True, check=False)
            subprocess.run(["zpool", "destroy", "-f", BPOOL], check=False)


def test_prune_automatic_bes_and_the_esp_floor(belab: BeLab) -> None:
    lab = belab
    lab.ok("init", "a")
    lab.ok("activate", "a")
    # BEs as 'beadm upgrade' leaves them (org.beadm:auto=upgrade set locally; its unit test
    # shows the exact zfs argv), each with a kernel of its own: u1 (important, oldest), u2,
    # u3 (pinned), um (mounted), u4 (newest); uf whose upgrade failed; mine, made by hand
    made = ["u1", "u2", "u3", "um", "u4", "uf", "mine"]
    for n, be in enumerate(made):
        lab.ok("create", be)
        if be != "mine":
            sh("zfs", "set", "org.beadm:auto=upgrade", f"{BROOT}/{be}")
        in_be(be, f"head -c {1 << 20} /dev/urandom > $d/boot/vmlinuz-6.1.0-{n}-new && "
                  f"head -c {3 << 20} /dev/urandom > $d/boot/initrd.img-6.1.0-{n}-new")
    sh("zfs", "set", "org.beadm:important=kernel", f"{BROOT}/u1")
    sh("zfs", "set", "org.beadm:keep=yes", f"{BROOT}/u3")
    sh("zfs", "set", "org.beadm:state=failed", f"{BROOT}/uf")
    lab.ok("sync")  # the new kernels get their entries (uf, failed, gets none)
    sh("mkdir", "-p", "/run/prune-um")
    sh("mount", "-t", "zfs", "-o", "zfsutil", f"{BROOT}/um", "/run/prune-um")
    for u in lab.uuids:
        files = esp_files(u)
        assert any("6.1.0-1-new" in f for f in files), files  # u2's own kernel is there
        assert not any("6.1.0-5-new" in f for f in files), files  # uf's is not

    # counts keep everything but the failed one; the ESP floor just above what is free
    lab.conf.write_text("keep = 10\nkeep_important = 5\npool_min_free = 1%\n"
                        "esp_min_free = 1%\n")
    data = json.loads(lab.ok("prune", "-n", "--json"))
    free = min(e["free"] for e in data["esps"])
    assert {e["uuid"] for e in data["esps"]} == set(lab.uuids)
    lab.conf.write_text("keep = 10\nkeep_important = 5\npool_min_free = 1%\n"
                        f"esp_min_free = {free + 1}\n")

    # -n: what would go and why, nothing changed (ZFS, every ESP byte)
    names_before, hashes_before = everything_in(BPOOL), esp_hashes(lab.uuids)
    out = lab.ok("prune", "-n", "-v")
    assert everything_in(BPOOL) == names_before
    assert esp_hashes(lab.uuids) == hashes_before
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.split()[:1] != ["BE"]
            and ln.strip()}
    assert "would destroy" in rows["uf"] and "its upgrade failed" in rows["uf"]
    assert "would destroy" in rows["u2"] and "below the floor" in rows["u2"]
    assert "pinned" in rows["u3"] and "mounted at /run/prune-um" in rows["um"]
    assert "keep" in rows["u1"] and "keep" in rows["u4"]
    assert "mine" not in rows and "a" not in rows  # made by hand; (a: not automatic)

    rc, out, err = lab.cli("prune", "--json")
    assert rc == 0, err
    data = json.loads(out)
    went = {b["name"] for b in data["bes"] if b["destroy"]}
    assert went == {"uf", "u2"}, data["bes"]
    assert all(e["free_after"] >= e["floor"] for e in data["esps"]), data["esps"]
    left = {ds.rpartition("/")[2] for ds in everything_in(BPOOL) if "@" not in ds
            and ds.count("/") == 2}
    assert left == {"a", "u1", "u3", "um", "u4", "mine"}
    for u in lab.uuids:
        files = esp_files(u)
        assert not any("-u2-" in f or "6.1.0-1-new" in f for f in files), files
        for kept in ("u1", "u4", "u3", "mine", "a"):
            assert any(f"beadm-{kept}-" in f for f in files), (kept, files)
    # (check reads every BE's kernels through a mount of its own, which fails on a BE
    # mounted elsewhere: "dataset is busy"; a limit of check, not of prune)
    sh("umount", "/run/prune-um")
    rc, out, err = lab.cli("check")
    assert (rc, out) == (0, ""), err
    # idempotent: again, nothing more goes
    before = everything_in(BPOOL)
    rc, out, err = lab.cli("prune")
    assert (rc, out) == (0, ""), err
    assert everything_in(BPOOL) == before


def everything_in(pool: str) -> set[str]:
    return set(sh("zfs", "list", "-H", "-t", "all", "-o", "name", "-r", pool).split())


def test_a_prune_killed_mid_way_leaves_every_remaining_be_bootable(belab: BeLab) -> None:
    """SIGKILL as soon as prune has marked the first BE it destroys: every other BE keeps
    its entries on every ESP, ``a`` still boots next, and the next command finishes."""
    lab = belab
    lab.ok("init", "a")
    lab.ok("activate", "a")
    for n, be in enumerate(["u1", "u2", "u3", "u4"]):
        lab.ok("create", be)
        sh("zfs", "set", "org.beadm:auto=upgrade", f"{BROOT}/{be}")
        in_be(be, f"head -c {1 << 20} /dev/urandom > $d/boot/vmlinuz-6.1.0-{n}-new && "
                  f"head -c {2 << 20} /dev/urandom > $d/boot/initrd.img-6.1.0-{n}-new")
    lab.ok("sync")
    lab.conf.write_text("keep = 1\npool_min_free = 1%\nesp_min_free = 1%\n")
    pid = os.fork()
    if pid == 0:  # the child: prune (u1, u2, u3 go), until killed
        code = 1
        try:
            code = lab.cli("prune")[0]
        finally:
            os._exit(code)
    killed_at = ""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        marks = sh("zfs", "get", "-H", "-p", "-o", "name,value", "-d", "1",
                   "org.beadm:state", BROOT)
        if "destroying" in marks:
            os.kill(pid, signal.SIGKILL)
            killed_at = marks
            break
        done, _ = os.waitpid(pid, os.WNOHANG)
        assert done == 0, "prune finished before it could be killed"
        time.sleep(0.05)
    os.waitpid(pid, 0)
    assert killed_at, "prune never marked a BE"
    half = [ln.split("\t")[0].rpartition("/")[2] for ln in killed_at.splitlines()
            if ln.endswith("\tdestroying")]
    assert len(half) == 1 and half[0] in ("u1", "u2", "u3"), killed_at
    # right after the kill: every BE not being destroyed has its entries on every ESP,
    # and a boots next (loader.conf and the EFI variable)
    standing = {ds.rpartition("/")[2] for ds in everything_in(BPOOL)
                if "@" not in ds and ds.count("/") == 2}
    for u in lab.uuids:
        files = esp_files(u)
        for be in standing - set(half):
            assert any(f"beadm-{be}-" in f for f in files), (u, be, files)
    efi = lab.backend(SubprocessRunner()).host.efivars
    assert efi.get(DEFAULT) == f"beadm-a-{KVER}.conf"
    # the next command finishes: the half-destroyed BE is removed, the others pruned
    out = lab.ok("prune")
    left = {ds.rpartition("/")[2] for ds in everything_in(BPOOL)
            if "@" not in ds and ds.count("/") == 2}
    assert left == {"a", "u4"}, (left, out)
    rc, out, err = lab.cli("check")
    assert (rc, out) == (0, ""), err
    for u in lab.uuids:
        files = esp_files(u)
        assert not any(f"beadm-u{i}-" in f for i in (1, 2, 3) for f in files), files
        assert any("beadm-u4-" in f for f in files) and any("beadm-a-" in f for f in files)


def states() -> dict[str, str]:
    """org.beadm:state of every BE root ("-": none)."""
    out = sh("zfs", "get", "-H", "-p", "-o", "name,value", "-d", "1", "org.beadm:state", BROOT)
    return {ln.split("\t")[0].rpartition("/")[2]: ln.split("\t")[1]
            for ln in out.splitlines() if ln.split("\t")[0] != BROOT}


def test_a_hold_or_a_busy_prune_candidate_jams_nothing(belab: BeLab) -> None:
    """Issue 23 item 5. u1, a prune candidate, has a snapshot with a ``zfs hold``: prune
    keeps it with one warning, before marking it. Then u1 is mounted in another mount
    namespace (a dead upgrade's chroot: beadm cannot see it), so ``zfs destroy`` fails
    busy: one warning, no mark left, its entries back. A ``destroying`` mark left on it
    anyway (a prune killed) costs a warning, never a failed ``activate`` or ``sync
    --if-used``, and ``list`` shows the BE [destroying]."""
    lab = belab
    lab.ok("init", "a")
    lab.ok("activate", "a")
    for n, be in enumerate(["u1", "u2", "u3"]):
        lab.ok("create", be)
        sh("zfs", "set", "org.beadm:auto=upgrade", f"{BROOT}/{be}")
        in_be(be, f"head -c {1 << 20} /dev/urandom > $d/boot/vmlinuz-6.1.0-{n}-new && "
                  f"head -c {1 << 20} /dev/urandom > $d/boot/initrd.img-6.1.0-{n}-new")
    lab.ok("sync")
    lab.conf.write_text("keep = 1\nkeep_important = 0\npool_min_free = 1%\n"
                        "esp_min_free = 0\n")
    held = f"{BROOT}/u1@beadm-20260101-000000"
    sh("zfs", "snapshot", held)
    sh("zfs", "hold", "lab", held)
    try:
        rc, out, err = lab.cli("prune")
        assert rc == 0, err
        assert [ln for ln in err.splitlines() if "warning" in ln] == [
            f"beadm: warning: prune keeps BE u1: {held} has a zfs hold (zfs holds {held})"], err
        assert states() == {"a": "-", "u1": "-", "u3": "-"}  # u2 went, u1 never marked
    finally:
        sh("zfs", "release", "lab", held)
    sh("zfs", "destroy", held)

    # busy where beadm cannot see it: mounted in a namespace of its own (read-only: the
    # backend's own read-only views of u1 share that mount; one read-write elsewhere
    # makes them fail busy too, a limit of the backend, not of prune)
    sh("mkdir", "-p", "/run/prune-ns")
    ns = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount -t zfs -o ro,zfsutil {BROOT}/u1 /run/prune-ns && echo up && exec sleep 600"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert ns.stdout is not None and ns.stdout.readline().strip() == "up"
        rc, out, err = lab.cli("prune")
        assert rc == 0, err
        warned = [ln for ln in err.splitlines() if "warning" in ln]
        assert len(warned) == 1 and "prune keeps BE u1: could not destroy it" in warned[0], err
        assert "busy" in warned[0], err
        assert states() == {"a": "-", "u1": "-", "u3": "-"}  # no mark left
        for u in lab.uuids:  # its entries are back
            assert any("beadm-u1-" in f for f in esp_files(u)), esp_files(u)
        rc, out, err = lab.cli("check")
        assert (rc, out) == (0, ""), (out, err)
        lab.ok("activate", "u3")
        lab.ok("sync", "--if-used")

        # a mark left anyway (a prune killed between mark and destroy): every command
        # warns and goes on; list shows it
        sh("zfs", "set", "org.beadm:state=destroying", f"{BROOT}/u1")
        for argv in (("sync", "--if-used"), ("activate", "a")):
            rc, out, err = lab.cli(*argv)
            assert rc == 0, (argv, err)
            assert "removing half-destroyed BE u1 failed" in err and "busy" in err, (argv, err)
        rows = {ln.split()[0]: ln for ln in lab.ok("list").splitlines()[1:]}
        assert "[destroying]" in rows["u1"], rows
        rc, out, err = lab.cli("activate", "u1")
        assert rc != 0 and "half-destroyed" in err, err
    finally:
        ns.kill()
        ns.wait()
    # the namespace is gone: the next changing command finishes u1
    rc, out, err = lab.cli("sync", "--if-used")
    assert rc == 0, err
    assert states() == {"a": "-", "u3": "-"}
    rc, out, err = lab.cli("check")
    assert (rc, out) == (0, ""), (out, err)
