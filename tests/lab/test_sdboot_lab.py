"""The systemd-boot backend on real OpenZFS and real FAT32 ESPs (lab VM; EFI variables too
when the VM was started with ``--uefi``): private-namespace mounts, shared store, entries,
loader.conf, LoaderEntryDefault, destroy/GC, and nothing left mounted afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labpool import device_digest, lab_sdboot_backend

from beadm.backend import BeRef
from beadm.errors import BootError
from beadm.esp.efivars import DEFAULT, ONESHOT
from beadm.esp.host import SystemHost
from beadm.runner import Runner, SubprocessRunner
from beadm.sdboot.backend import SystemdBootBackend

POOL = "sdbtest"
KVER = "6.1.0-99-test"


@pytest.fixture
def machine(pool_disks: list[Path], esps: list[tuple[Path, str]], sh: Callable[..., str],
            tmp_path: Path) -> Iterator[tuple[SystemdBootBackend, list[str]]]:
    alt = tmp_path / "alt"
    sh("zpool", "create", "-f", "-R", str(alt), "-O", "mountpoint=none", POOL,
       str(pool_disks[0]))
    try:
        sh("zfs", "create", "-o", "canmount=off", f"{POOL}/ROOT")
        sh("zfs", "create", "-o", "mountpoint=/", "-o", "canmount=noauto", f"{POOL}/ROOT/a")
        sh("zfs", "mount", f"{POOL}/ROOT/a")
        root = alt
        (root / "boot").mkdir()
        (root / "etc/kernel").mkdir(parents=True)
        (root / f"boot/vmlinuz-{KVER}").write_bytes(b"K" * (3 << 20))
        (root / f"boot/initrd.img-{KVER}").write_bytes(b"I" * (5 << 20))
        (root / "etc/kernel/cmdline").write_text(f"root=ZFS={POOL}/ROOT/a boot=zfs quiet\n")
        sh("zfs", "umount", f"{POOL}/ROOT/a")
        sh("zfs", "snapshot", f"{POOL}/ROOT/a@s")
        sh("zfs", "clone", "-o", "mountpoint=/", "-o", "canmount=noauto",
           f"{POOL}/ROOT/a@s", f"{POOL}/ROOT/b")
        uuids = [u for _, u in esps]
        yield lab_sdboot_backend(tmp_path, uuids), uuids
    finally:
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)


def esp_ls(uuid: str, sh: Callable[..., str], *cmd: str) -> str:
    script = (f"mkdir -p /run/sdbt && mount -o ro /dev/disk/by-uuid/{uuid} /run/sdbt && "
              f"cd /run/sdbt && {' '.join(cmd)}")
    return sh("unshare", "--mount", "--propagation", "private", "sh", "-c", script)


def nothing_mounted(sh: Callable[..., str], uuids: list[str]) -> None:
    table = Path("/proc/self/mountinfo").read_text()
    assert f"{POOL}/ROOT" not in table
    for u in uuids:
        real = str(Path(f"/dev/disk/by-uuid/{u}").resolve())
        assert f" {real} " not in table


def test_backend_on_real_zfs_and_fat(machine: tuple[SystemdBootBackend, list[str]],
                                     sh: Callable[..., str]) -> None:
    backend, uuids = machine
    a, b = BeRef("a", f"{POOL}/ROOT/a"), BeRef("b", f"{POOL}/ROOT/b", "clone of a")
    backend.init(a)
    backend.post_create(b)
    nothing_mounted(sh, uuids)
    for u in uuids:
        files = esp_ls(u, sh, "ls beadm loader/entries").split()
        assert sum(1 for f in files if "-vmlinuz-" in f or "-initrd.img-" in f) == 2
        assert f"beadm-a-{KVER}.conf" in files and f"beadm-b-{KVER}.conf" in files
        text = esp_ls(u, sh, f"cat loader/entries/beadm-b-{KVER}.conf")
        assert f"options root=ZFS={POOL}/ROOT/b boot=zfs quiet" in text
    # b's own cmdline names b
    out = sh("sh", "-c", f"d=$(mktemp -d); mount -t zfs -o ro,zfsutil {POOL}/ROOT/b $d; "
             f"cat $d/etc/kernel/cmdline; umount $d")
    assert out.startswith(f"root=ZFS={POOL}/ROOT/b ")
    backend.activate(b, temporary=False)
    nothing_mounted(sh, uuids)
    for u in uuids:
        assert f"default beadm-b-{KVER}.conf" in esp_ls(u, sh, "cat loader/loader.conf")
    efi = backend.host.efivars
    assert efi.get(DEFAULT) == f"beadm-b-{KVER}.conf"
    assert backend.boot_state([a, b]).next_boot == "b"
    assert backend.check([a, b]).problems == ()
    backend.activate(a, temporary=True)
    assert efi.get(ONESHOT) == f"beadm-a-{KVER}.conf"
    assert backend.boot_state([a, b]).once == "a"
    backend.activate(a, temporary=False)
    assert efi.get(ONESHOT) is None
    backend.post_destroy(b)  # (the datasets are the BE library's business)
    for u in uuids:
        files = esp_ls(u, sh, "ls beadm loader/entries").split()
        assert f"beadm-b-{KVER}.conf" not in files
        assert sum(1 for f in files if "-vmlinuz-" in f or "-initrd.img-" in f) == 2  # a's
    nothing_mounted(sh, uuids)
    efi.delete(DEFAULT)



def test_a_sessions_be_mounts_are_mount2_calls_that_real_zfs_takes(
        machine: tuple[SystemdBootBackend, list[str]], tmp_path: Path) -> None:
    """Issue 15: the session mounts a BE with mount(2) as libzfs does (no ZFS helper
    process). On real ZFS: the mount is a zfs mount of the dataset, ``ro`` is honoured,
    the ``mntpoint=`` hint lets a ``.zfs/snapshot`` automount work under it, and a mount
    that the kernel refuses goes through the helper, whose message the error carries."""
    from beadm.errors import CommandError
    from beadm.esp.host import LibcMounts

    m = LibcMounts(SubprocessRunner())
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    m.run(["mount", "-t", "zfs", "-o", "ro,zfsutil", f"{POOL}/ROOT/a", str(ro)], readonly=True)
    try:
        m.run(["mount", "-t", "zfs", "-o", "zfsutil", f"{POOL}/ROOT/b", str(rw)],
              readonly=True)
        try:
            rows = {ln.split(" - ")[0].split()[4]: ln
                    for ln in Path("/proc/self/mountinfo").read_text().splitlines()}
            assert f" - zfs {POOL}/ROOT/a " in rows[str(ro)]
            assert rows[str(ro)].split()[5].startswith("ro")
            assert f" - zfs {POOL}/ROOT/b " in rows[str(rw)]
            assert rows[str(rw)].split()[5].startswith("rw")
            with pytest.raises(OSError, match="Read-only file system"):
                (ro / "etc/beadm-probe").write_text("x")
            (rw / "etc/beadm-probe").write_text("x")
            (rw / "etc/beadm-probe").unlink()
            assert (ro / ".zfs/snapshot/s/etc/kernel/cmdline").read_text().startswith(
                f"root=ZFS={POOL}/ROOT/a ")
        finally:
            m.run(["umount", str(rw)], readonly=True)
        with pytest.raises(CommandError) as got:
            m.run(["mount", "-t", "zfs", "-o", "zfsutil", f"{POOL}/ROOT/nope", str(rw)],
                  readonly=True)
        assert "mount -t zfs" in str(got.value) and "nope" in str(got.value)
        assert f"{POOL}/ROOT/nope" in got.value.stderr, got.value.stderr  # the helper's words
    finally:
        subprocess.run(["umount", str(ro / ".zfs/snapshot/s")], check=False,
                       capture_output=True)
        if m.run(["umount", str(ro)], readonly=True, check=False).returncode != 0:
            m.run(["umount", "-l", str(ro)], readonly=True)
    assert f"{POOL}/ROOT" not in Path("/proc/self/mountinfo").read_text()


def test_a_be_mounted_by_hand_is_checked_and_activated_where_it_is(
        machine: tuple[SystemdBootBackend, list[str]], sh: Callable[..., str],
        tmp_path: Path) -> None:
    """A BE mounted already (``beadm mount``, an admin's mount): real ZFS refuses a second
    mount of it, so check, activate and sync use that mount (read-write) and leave it
    mounted; mounted read-only when activate must write into it, activate fails naming it."""
    backend, uuids = machine
    a, b = BeRef("a", f"{POOL}/ROOT/a"), BeRef("b", f"{POOL}/ROOT/b")
    where = tmp_path / "b"
    where.mkdir()
    try:
        backend.init(a)
        backend.post_create(b)
        sh("mount", "-t", "zfs", "-o", "zfsutil", b.dataset, str(where))
        try:
            # a second mount of a mounted dataset fails on real ZFS: what this is about
            second = subprocess.run(["mount", "-t", "zfs", "-o", "ro,zfsutil", b.dataset,
                                     str(tmp_path)], capture_output=True, text=True)
            assert second.returncode != 0, "ZFS mounted a mounted dataset twice"
            assert backend.check([a, b]).problems == ()
            backend.activate(b, temporary=False)
            assert backend.boot_state([a, b]).next_boot == "b"
            backend.sync([a, b])
            assert f" {where} " in Path("/proc/self/mountinfo").read_text()  # still there
            assert (where / "etc/kernel/cmdline").read_text().startswith(
                f"root=ZFS={b.dataset} ")
        finally:
            sh("umount", str(where))
        # b without an ESP list: activate must write the running one into it
        sh("sh", "-c", f"mount -t zfs -o zfsutil {b.dataset} {where} && "
                       f"rm {where}/etc/kernel/proxmox-boot-uuids && umount {where}")
        sh("mount", "-t", "zfs", "-o", "ro,zfsutil", b.dataset, str(where))
        try:
            with pytest.raises(BootError, match=f"BE b is mounted read-only at {where}"):
                backend.activate(b, temporary=False)
        finally:
            sh("umount", str(where))
        nothing_mounted(sh, uuids)
    finally:
        backend.post_destroy(b)
        backend.post_destroy(a)
        efi = backend.host.efivars
        for var in (DEFAULT, ONESHOT):
            if efi.get(var) is not None:
                efi.delete(var)


def test_activate_carries_the_running_esp_list_on_real_zfs(
        machine: tuple[SystemdBootBackend, list[str]], sh: Callable[..., str]) -> None:
    """Issue 11.7: a BE whose ESP list is stale (made before a disk replacement) gets the
    running root's list at activate, through beadm's read-only mount remounted read-write,
    its mode kept; check reports the stale list before and nothing after."""
    backend, uuids = machine
    a, b = BeRef("a", f"{POOL}/ROOT/a"), BeRef("b", f"{POOL}/ROOT/b")
    in_b = (f"d=$(mktemp -d); mount -t zfs -o {{}},zfsutil {POOL}/ROOT/b $d; {{}}; "
            "umount $d; rmdir $d")
    path = "$d/etc/kernel/proxmox-boot-uuids"
    try:
        backend.init(a)
        backend.post_create(b)  # b had no list: it gets the running one
        assert sh("sh", "-c", in_b.format("ro", f"cat {path}")) == "\n".join(uuids) + "\n"
        sh("sh", "-c", in_b.format("rw", f"printf '{uuids[0]}\\nGONE-0002\\n' > {path}; "
                                         f"chmod 600 {path}"))
        problems = backend.check([a, b]).problems
        assert any(p.startswith("BE b: /etc/kernel/proxmox-boot-uuids lists") for p in problems)
        backend.activate(b, temporary=False)
        nothing_mounted(sh, uuids)
        out = sh("sh", "-c", in_b.format("ro", f"cat {path}; stat -c %a {path}; "
                                               "ls -A $d/etc/kernel"))
        assert out.startswith("\n".join(uuids) + "\n600\n"), out
        assert "beadm-tmp" not in out
        assert backend.check([a, b]).problems == ()
    finally:
        backend.post_destroy(b)
        backend.post_destroy(a)
        efi = backend.host.efivars
        if efi.get(DEFAULT) is not None:
            efi.delete(DEFAULT)


def _state(sh: Callable[..., str], uuids: list[str],
           backend: SystemdBootBackend) -> tuple[str, list[str], list[str | None]]:
    """Every byte of every ESP, the pool's datasets and properties, the EFI variables."""
    esps = [device_digest(Path(f"/dev/disk/by-uuid/{u}"))
            for u in uuids]
    ds = sh("zfs", "list", "-H", "-p", "-t", "all", "-r", "-o",
            "name,origin,canmount,mountpoint,mounted,org.beadm:next,org.beadm:state,"
            "org.beadm:description", POOL)
    bootfs = sh("zpool", "get", "-H", "-o", "value", "bootfs", POOL)
    efi = [backend.host.efivars.get(v) for v in (DEFAULT, ONESHOT)]
    return ds + bootfs, esps, efi


def _cli(backend: SystemdBootBackend, *argv: str) -> tuple[int, str, str]:
    import io

    from beadm.cli import Deps, main

    host = backend.host
    assert isinstance(host, SystemHost)
    out, err = io.StringIO(), io.StringIO()

    def make_backend(name: str, runner: Runner) -> SystemdBootBackend:
        h = SystemHost(runner, etc_kernel=host.etc_kernel, efivars=host.efivars.root, out=out)
        return SystemdBootBackend(runner, host=h, out=out)

    deps = Deps(make_runner=lambda dry, o: SubprocessRunner(dry_run=dry, out=o),
                make_backend=make_backend, lock_path=Path("/run/sdbt.lock"),
                stdin=io.StringIO(), stdout=out, stderr=err)
    rc = main(["--root", f"{POOL}/ROOT", "--backend", "systemd-boot", *argv], deps=deps)
    return rc, out.getvalue(), err.getvalue()


def test_dry_runs_change_no_byte_of_esps_or_pool(
        machine: tuple[SystemdBootBackend, list[str]], sh: Callable[..., str]) -> None:
    """Issue 10.5: ``beadm -n create`` used to mount the dataset it did not create (exit 9)
    and print a rollback. On real vfat and ZFS: -n create, activate and destroy exit 0,
    print what would run, and leave every ESP byte, dataset and EFI variable as it was."""
    backend, uuids = machine
    a, b = BeRef("a", f"{POOL}/ROOT/a"), BeRef("b", f"{POOL}/ROOT/b")
    backend.init(a)
    backend.post_create(b)
    backend.activate(a, temporary=False)
    before = _state(sh, uuids, backend)
    rc, out, err = _cli(backend, "-n", "create", "-e", "a", "c")
    assert (rc, err) == (0, ""), out
    assert "would run: zfs clone" in out and f"{POOL}/ROOT/c" in out
    assert "destroy" not in out
    rc, out, err = _cli(backend, "-n", "activate", "b")
    assert (rc, err) == (0, ""), out
    assert f"would run: zpool set bootfs={POOL}/ROOT/b {POOL}" in out
    assert f"default beadm-b-{KVER}.conf" in out
    rc, out, err = _cli(backend, "-n", "destroy", "b")
    assert rc == 0, out + err  # (err: the note that a@s, not made by beadm, is kept)
    assert f"would run: zfs destroy -r {POOL}/ROOT/b" in out
    assert f"loader/entries/beadm-b-{KVER}.conf" in out
    nothing_mounted(sh, uuids)
    assert _state(sh, uuids, backend) == before
    backend.host.efivars.delete(DEFAULT)


def test_sync_repairs_cmdline_drift_on_real_fat(
        machine: tuple[SystemdBootBackend, list[str]], sh: Callable[..., str]) -> None:
    """Issue 10.6: a BE's /etc/kernel/cmdline edited (root= of another BE, a new option):
    check reports it; sync rewrites the file and the entries on every ESP; check is clean."""
    backend, uuids = machine
    a, b = BeRef("a", f"{POOL}/ROOT/a"), BeRef("b", f"{POOL}/ROOT/b")
    backend.init(a)
    backend.post_create(b)
    sh("sh", "-c", f"d=$(mktemp -d); mount -t zfs -o zfsutil {POOL}/ROOT/b $d; "
       f"echo 'root=ZFS={POOL}/ROOT/a quiet mitigations=off' > $d/etc/kernel/cmdline; "
       "umount $d")
    assert any("b: /etc/kernel/cmdline" in p for p in backend.check([a, b]).problems)
    backend.sync([a, b])
    assert backend.check([a, b]).problems == ()
    want = f"root=ZFS={POOL}/ROOT/b quiet mitigations=off boot=zfs"
    for u in uuids:
        assert f"options {want}\n" in esp_ls(u, sh, f"cat loader/entries/beadm-b-{KVER}.conf")
    out = sh("sh", "-c", f"d=$(mktemp -d); mount -t zfs -o ro,zfsutil {POOL}/ROOT/b $d; "
             f"cat $d/etc/kernel/cmdline; umount $d")
    assert out == want + "\n"
    nothing_mounted(sh, uuids)


def test_session_namespace_follows_host_unmounts_and_hides_its_own(
        machine: tuple[SystemdBootBackend, list[str]], sh: Callable[..., str]) -> None:
    """Issue 10.7: a mount the host removes during a beadm session is gone in beadm's
    namespace too (a private namespace kept it alive and busy), and neither the ESPs beadm
    mounts nor anything else it mounts inside is ever visible on the host."""
    backend, uuids = machine
    shared = Path("/run/sdbt-shared")
    shared.mkdir(exist_ok=True)
    sh("mount", "-t", "tmpfs", "sdbt-shared", str(shared))
    host_ns = subprocess.Popen(["sleep", "600"])  # stays in the host's namespace
    try:
        sh("mount", "--make-shared", str(shared))
        (shared / "inner").mkdir()
        (shared / "mine").mkdir()
        sh("mount", "-t", "tmpfs", "sdbt-inner", str(shared / "inner"))
        host_table = Path(f"/proc/{host_ns.pid}/mountinfo")
        with backend.host.session() as s:
            esps = s.esps()  # enters beadm's namespace, mounts every ESP
            assert all(e.store is not None for e in esps)
            mine = Path("/proc/self/mountinfo")
            assert "sdbt-inner" in mine.read_text()
            sh("mount", "-t", "tmpfs", "sdbt-mine", str(shared / "mine"))
            sh("nsenter", "-t", str(host_ns.pid), "-m", "umount", str(shared / "inner"))
            assert "sdbt-inner" not in mine.read_text()  # the host's unmount reached us
            outside = host_table.read_text()
            assert "sdbt-mine" not in outside
            for e in esps:
                assert e.store is not None
                assert f" {e.store.root} " in mine.read_text()
                assert str(e.store.root) not in outside
            for u in uuids:
                real = str(Path(f"/dev/disk/by-uuid/{u}").resolve())
                assert f" {real} " not in outside
        assert "sdbt-mine" not in Path("/proc/self/mountinfo").read_text()
    finally:
        host_ns.kill()
        host_ns.wait()
        subprocess.run(["umount", "-R", str(shared)], check=False)
    nothing_mounted(sh, uuids)


def test_no_room_for_proxmox_next_kernel_refuses_before_writing(
        machine: tuple[SystemdBootBackend, list[str]], sh: Callable[..., str],
        tmp_path: Path) -> None:
    """Issue 11.1 on real FAT32: ESP 2 holds a Proxmox kernel + initrd of 74 MiB and has
    78 MiB free; BE a's 8 MiB of kernel files would leave less than Proxmox's next kernel
    needs: init refuses, naming ESP 2, and no byte of either ESP changes. With 8 MiB more
    free it goes through."""
    import os

    from beadm.errors import BootError

    backend, uuids = machine
    u = uuids[1]
    esp = tmp_path / "esp2"
    esp.mkdir()
    mib = 1 << 20
    sh("mount", "-t", "vfat", f"/dev/disk/by-uuid/{u}", str(esp))
    try:
        # the VM's earlier tests may have stored a's kernel here already (then it needs no
        # room): start from an ESP without beadm's files
        sh("rm", "-rf", f"{esp}/beadm", *map(str, esp.glob("loader/entries/beadm-*")))
        pair = esp / "EFI/proxmox/6.1.0-1-pve"
        pair.mkdir(parents=True)
        sh("dd", "if=/dev/zero", f"of={pair}/vmlinuz-6.1.0-1-pve", "bs=1M", "count=14")
        sh("dd", "if=/dev/zero", f"of={pair}/initrd.img-6.1.0-1-pve", "bs=1M", "count=60")
        v = os.statvfs(esp)
        fill = (v.f_bavail * v.f_frsize - 78 * mib) // mib
        sh("dd", "if=/dev/zero", f"of={esp}/filler", "bs=1M", f"count={fill}")
        v = os.statvfs(esp)
        print(f"ESP {u}: {v.f_bavail * v.f_frsize / mib:.1f} MiB free")
    finally:
        sh("umount", str(esp))
    try:
        before = _state(sh, uuids, backend)
        with pytest.raises(BootError,
                           match=f"nothing written: ESP {u} has 7[0-9].[0-9] MiB free"):
            backend.init(BeRef("a", f"{POOL}/ROOT/a"))
        nothing_mounted(sh, uuids)
        assert _state(sh, uuids, backend) == before
        sh("mount", "-t", "vfat", f"/dev/disk/by-uuid/{u}", str(esp))
        try:
            sh("truncate", "-s", f"{max(fill - 8, 0)}M", f"{esp}/filler")
        finally:
            sh("umount", str(esp))
        backend.init(BeRef("a", f"{POOL}/ROOT/a"))
        assert f"beadm-a-{KVER}.conf" in esp_ls(u, sh, "ls loader/entries").split()
        nothing_mounted(sh, uuids)
    finally:  # the ESPs are shared by the lab tests of this VM: give the space back
        sh("mount", "-t", "vfat", f"/dev/disk/by-uuid/{u}", str(esp))
        try:
            sh("rm", "-rf", f"{esp}/filler", f"{esp}/EFI/proxmox/6.1.0-1-pve")
        finally:
            sh("umount", str(esp))
