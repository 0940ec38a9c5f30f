"""SystemHost: argv sequences of ESP and BE mounting in the private namespace (fake runner)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import ClassVar

import pytest

from beadm.backend import BeRef
from beadm.errors import BootError, CommandError
from beadm.esp.efivars import EfiVars
from beadm.esp.host import SystemHost, read_uuids
from beadm.runner import Runner
from beadm.sdboot.backend import SystemdBootBackend
from worlds.sdboot import PropRunner

U1, U2 = "C0DE-0001", "C0DE-0002"


class FakeNamespace:
    log: ClassVar[list[str]] = []

    def __init__(self, runner: Runner) -> None:
        pass

    def enter(self) -> None:
        FakeNamespace.log.append("enter")

    def leave(self) -> None:
        FakeNamespace.log.append("leave")


def host(tmp: Path, runner: PropRunner, devices: tuple[str, ...] = (U1, U2)) -> SystemHost:
    etc, dev, run, efi = (tmp / d for d in ("etc", "dev", "run", "efi"))
    for d in (etc, dev, run, efi):
        d.mkdir()
    (etc / "proxmox-boot-uuids").write_text(f"{U1}\n{U2}\n")
    for u in devices:
        (dev / u).write_text("")
    h = SystemHost(runner, etc_kernel=etc, efivars=efi, dev_by_uuid=dev, tmp_base=str(run))
    h.namespace_factory = FakeNamespace  # type: ignore[assignment]
    FakeNamespace.log = []
    return h


def mounts(runner: PropRunner) -> list[tuple[str, ...]]:
    return [c for c in runner.calls if c[0] in ("mount", "umount")]


def test_each_esp_mounted_once_and_unmounted(tmp_path: Path) -> None:
    r = PropRunner()
    h = host(tmp_path, r)
    b = SystemdBootBackend(r, host=h)
    b.post_destroy(BeRef("x", "rpool/ROOT/x"))
    ms = mounts(r)
    esp_mounts = [c for c in ms if c[:3] == ("mount", "-t", "vfat")]
    assert [c[5] for c in esp_mounts] == [str(tmp_path / "dev" / U1), str(tmp_path / "dev" / U2)]
    assert all(c[4] == "umask=0077" for c in esp_mounts)
    assert [c[1] for c in ms if c[0] == "umount"] == [esp_mounts[1][6], esp_mounts[0][6]]
    assert FakeNamespace.log == ["enter", "leave"]
    assert list((tmp_path / "run").iterdir()) == []  # private mount points removed
    assert h.esp_mounts == 2


def test_missing_esp_named_and_rest_unmounted(tmp_path: Path) -> None:
    r = PropRunner()
    h = host(tmp_path, r, devices=(U1,))
    b = SystemdBootBackend(r, host=h)
    warned = b.post_destroy(BeRef("x", "rpool/ROOT/x"))  # degraded: the ESP present did it
    assert len(warned) == 1 and f"ESP {U2} is missing" in warned[0]
    ms = mounts(r)
    assert len([c for c in ms if c[0] == "mount" and "vfat" in c]) == 1
    assert len([c for c in ms if c[0] == "umount"]) == 1
    assert FakeNamespace.log == ["enter", "leave"]


def test_failure_inside_still_unmounts(tmp_path: Path) -> None:
    r = PropRunner()
    h = host(tmp_path, r)
    be = BeRef("pve-2", "rpool/ROOT/pve-2")  # not running: mounted, and it has no kernels
    with pytest.raises(BootError, match="no kernel"):
        SystemdBootBackend(r, host=h).post_create(be)
    ms = mounts(r)
    assert ms[0][:6] == ("mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/pve-2")
    assert [c[0] for c in ms] == ["mount", "umount"]
    assert FakeNamespace.log == ["enter", "leave"]


def test_dry_run_mounts_read_only(tmp_path: Path) -> None:
    r = PropRunner(dry_run=True)
    h = host(tmp_path, r)
    with pytest.raises(BootError):
        SystemdBootBackend(r, host=h).post_create(BeRef("pve-2", "rpool/ROOT/pve-2"))
    assert mounts(r)[0][4] == "ro,zfsutil"


def test_list_answers_from_efi_variables_without_mounting(tmp_path: Path) -> None:
    r = PropRunner()
    h = host(tmp_path, r)
    EfiVars(tmp_path / "efi").set("LoaderEntryDefault", "beadm-pve-2-6.8.12-1-pve.conf")
    state = SystemdBootBackend(r, host=h).boot_state(
        [BeRef("pve-1", "rpool/ROOT/pve-1", running=True), BeRef("pve-2", "rpool/ROOT/pve-2")])
    assert state.next_boot == "pve-2"
    assert mounts(r) == [] and FakeNamespace.log == []


def test_old_uuids_file_name(tmp_path: Path) -> None:
    (tmp_path / "pve-efiboot-uuids").write_text("B-2\nA-1\n\nA-1\n")
    assert read_uuids(tmp_path) == ["A-1", "B-2"]
    with pytest.raises(BootError, match="no ESP list"):
        read_uuids(tmp_path / "none")
    (tmp_path / "pve-efiboot-uuids").write_text("\n")
    with pytest.raises(BootError, match="lists no ESP"):
        read_uuids(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_SYS_ADMIN) for unshare")
def test_private_namespace_hides_mounts_and_returns(tmp_path: Path) -> None:
    from beadm.esp.host import PrivateNamespace
    from beadm.runner import SubprocessRunner

    ns = PrivateNamespace(SubprocessRunner())
    d = tmp_path / "m"
    d.mkdir()
    before = Path("/proc/self/ns/mnt").readlink()
    ns.enter()
    try:
        assert Path("/proc/self/ns/mnt").readlink() != before
        subprocess.run(["mount", "-t", "tmpfs", "beadm-test", str(d)], check=True)
        assert d.is_mount()
        outside = Path("/proc/1/mountinfo").read_text()
        assert "beadm-test" not in outside
    finally:
        ns.leave()
    assert Path("/proc/self/ns/mnt").readlink() == before
    assert not d.is_mount()  # the namespace, and its mount, are gone


def test_unmountable_present_esp_is_an_error_not_a_warning(tmp_path: Path) -> None:
    r = PropRunner()
    h = host(tmp_path, r)
    orig = r.run

    def run(argv: object, **kw: object) -> object:
        a = tuple(argv)  # type: ignore[arg-type]
        if a[:3] == ("mount", "-t", "vfat") and U2 in a[5]:
            return orig(["false"], **kw)  # type: ignore[arg-type]
        return orig(a, **kw)  # type: ignore[arg-type]

    r.run = run  # type: ignore[method-assign,assignment]
    with pytest.raises(BootError, match=f"ESP {U2} cannot be mounted"):
        SystemdBootBackend(r, host=h).post_destroy(BeRef("x", "rpool/ROOT/x"))


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def unshare(self, flags: int) -> int:
        self.calls.append("unshare")
        return 0

    def setns(self, fd: int, flags: int) -> int:
        self.calls.append("setns")
        return 0


def test_namespace_is_a_slave_of_the_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10.7: slave propagation, so that the host's unmounts reach beadm's namespace
    (a private one kept them alive and busy) and beadm's mounts never reach the host."""
    from beadm.esp import namespace as nsmod

    libc = FakeLibc()
    monkeypatch.setattr(nsmod.ctypes, "CDLL", lambda *a, **k: libc)
    r = PropRunner()
    ns = nsmod.PrivateNamespace(r)
    ns.enter()
    ns.leave()
    assert libc.calls == ["unshare", "setns"]
    assert r.calls == [("mount", "--make-rslave", "/")]


def test_namespace_left_when_propagation_cannot_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from beadm.esp import namespace as nsmod

    libc = FakeLibc()
    monkeypatch.setattr(nsmod.ctypes, "CDLL", lambda *a, **k: libc)

    class Failing(PropRunner):
        def run(self, argv: object, **kw: object) -> object:  # type: ignore[override]
            return super().run(["false"])

    ns = nsmod.PrivateNamespace(Failing())
    with pytest.raises(CommandError):
        ns.enter()
    assert libc.calls == ["unshare", "setns"]


# -- one session per command (issue 15) ------------------------------------------------


def test_a_hold_shares_one_namespace_and_one_mount_of_each_esp_and_be(tmp_path: Path) -> None:
    """The guard's look, the drop-ins and the backend hooks of one command: the ESPs and
    the target BE are mounted once, in one namespace, and all unmounted when it ends."""
    r = PropRunner()
    h = host(tmp_path, r)
    b = SystemdBootBackend(r, host=h)
    be = BeRef("pve-2", "rpool/ROOT/pve-2")
    assert b.be_view(be, writable=False) is None  # nothing held: no view (nothing mounted)
    assert mounts(r) == []
    with b.hold():
        view = b.be_view(be, writable=False)
        assert view is not None and view.is_dir()
        assert b.be_view(be, writable=False) == view
        b.post_destroy(BeRef("x", "rpool/ROOT/x"))
        b.post_destroy(BeRef("y", "rpool/ROOT/y"))
        assert b.be_view(be, writable=True) == view  # remounted read-write, same place
        assert [c[0] for c in mounts(r)].count("umount") == 0
    ms = mounts(r)
    assert [c[2] for c in ms if c[:2] == ("mount", "-t")] == ["zfs", "vfat", "vfat"]
    assert ("mount", "-o", "remount,rw", str(view)) in ms
    assert len([c for c in ms if c[0] == "umount"]) == 3
    assert FakeNamespace.log == ["enter", "leave"]
    assert list((tmp_path / "run").iterdir()) == []


def test_release_unmounts_now_and_the_next_session_mounts_again(tmp_path: Path) -> None:
    r = PropRunner()
    h = host(tmp_path, r)
    b = SystemdBootBackend(r, host=h)
    with b.hold():
        b.post_destroy(BeRef("x", "rpool/ROOT/x"))
        b.release()
        assert len([c for c in mounts(r) if c[0] == "umount"]) == 2
        assert FakeNamespace.log == ["enter", "leave"]
        b.post_destroy(BeRef("y", "rpool/ROOT/y"))
    assert len([c for c in mounts(r) if c[:3] == ("mount", "-t", "vfat")]) == 4
    assert len([c for c in mounts(r) if c[0] == "umount"]) == 4
    assert FakeNamespace.log == ["enter", "leave", "enter", "leave"]


def test_without_a_hold_each_hook_has_its_own_session(tmp_path: Path) -> None:
    r = PropRunner()
    h = host(tmp_path, r)
    b = SystemdBootBackend(r, host=h)
    b.post_destroy(BeRef("x", "rpool/ROOT/x"))
    b.post_destroy(BeRef("y", "rpool/ROOT/y"))
    assert len([c for c in mounts(r) if c[:3] == ("mount", "-t", "vfat")]) == 4
    assert FakeNamespace.log == ["enter", "leave", "enter", "leave"]


class RecordingLibc:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fail = fail

    def mount(self, *args: object) -> int:
        self.calls.append(("mount", *args))
        return -1 if self.fail else 0

    def umount2(self, *args: object) -> int:
        self.calls.append(("umount2", *args))
        return -1 if self.fail else 0


def test_the_sessions_own_mounts_are_libc_calls_as_mount8_makes_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: no process per ESP or BE mount, unmount or propagation change; a ZFS
    mount with other options than ``[ro,]zfsutil`` goes through mount(8) (its ZFS helper),
    as does one whose mount(2) fails (the helper then says why, in its words)."""
    from beadm.esp import namespace as nsmod

    libc = RecordingLibc()
    monkeypatch.setattr(nsmod.ctypes, "CDLL", lambda *a, **k: libc)
    inner = PropRunner()
    m = nsmod.LibcMounts(inner)  # type: ignore[arg-type]
    m.run(["mount", "--make-rslave", "/"], readonly=True)
    m.run(["mount", "-t", "vfat", "-o", "umask=0077", "/dev/sda2", "/run/b/esp"], readonly=True)
    m.run(["mount", "-t", "vfat", "-o", "ro,umask=0077", "/dev/sdb2", "/run/b/e2"], readonly=True)
    m.run(["umount", "/run/b/esp"], readonly=True, check=False)
    m.run(["umount", "-l", "/run/b/e2"], readonly=True, check=False)
    m.run(["mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/pve-2", "/run/b/be-0"],
          readonly=True)
    m.run(["mount", "-t", "zfs", "-o", "ro,zfsutil", "rpool/ROOT/pve-3", "/run/b/be-1"],
          readonly=True)
    helper = [("mount", "-t", "zfs", "-o", "zfsutil,noatime", "rpool/ROOT/a", "/run/b/x"),
              ("mount", "-t", "zfs", "-o", "ro", "rpool/ROOT/b", "/run/b/y"),
              ("mount", "-t", "zfs", "-o", "ro,rw,zfsutil", "rpool/ROOT/c", "/run/b/z"),
              ("mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/d", "/run/b,x")]
    for argv in helper:
        m.run(argv, readonly=True)
    assert libc.calls == [
        ("mount", None, b"/", None, nsmod.MS_REC | nsmod.MS_SLAVE, None),
        ("mount", b"/dev/sda2", b"/run/b/esp", b"vfat", 0, b"umask=0077"),
        ("mount", b"/dev/sdb2", b"/run/b/e2", b"vfat", nsmod.MS_RDONLY, b"umask=0077"),
        ("umount2", b"/run/b/esp", 0),
        ("umount2", b"/run/b/e2", nsmod.MNT_DETACH),
        ("mount", b"rpool/ROOT/pve-2", b"/run/b/be-0", b"zfs", 0,
         b"zfsutil,mntpoint=/run/b/be-0"),
        ("mount", b"rpool/ROOT/pve-3", b"/run/b/be-1", b"zfs", nsmod.MS_RDONLY,
         b"ro,zfsutil,mntpoint=/run/b/be-1"),
    ]
    assert inner.calls == helper
    libc.fail = True
    with pytest.raises(CommandError):
        m.run(["mount", "-t", "vfat", "-o", "umask=0077", "/dev/sda2", "/x"], readonly=True)
    assert m.run(["umount", "/x"], readonly=True, check=False).returncode == 32
    inner.calls.clear()
    m.run(["mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/pve-2", "/run/b/be-2"],
          readonly=True)
    assert libc.calls[-1][:4] == ("mount", b"rpool/ROOT/pve-2", b"/run/b/be-2", b"zfs")
    assert inner.calls == [("mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/pve-2",
                            "/run/b/be-2")]



def test_the_zfs_helper_mounts_beadm_zfs_builds_are_the_libc_calls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24: every ZFS mount's argv comes from beadm.zfs; the session's (both modes)
    must stay in the form LibcMounts makes with mount(2), not a process each."""
    from beadm.esp import namespace as nsmod
    from beadm.zfs import Zfs

    libc = RecordingLibc()
    monkeypatch.setattr(nsmod.ctypes, "CDLL", lambda *a, **k: libc)
    inner = PropRunner()
    z = Zfs(nsmod.LibcMounts(inner))  # type: ignore[arg-type]
    z.mount_at("rpool/ROOT/pve-2", "/run/b/be-0", readonly=True)
    z.mount_at("rpool/ROOT/pve-3", "/run/b/be-1", ro=True, readonly=True)
    assert inner.calls == []
    assert [c[1:5] for c in libc.calls] == [
        (b"rpool/ROOT/pve-2", b"/run/b/be-0", b"zfs", 0),
        (b"rpool/ROOT/pve-3", b"/run/b/be-1", b"zfs", nsmod.MS_RDONLY)]

def test_the_real_runner_gets_libc_mounts_a_test_runner_does_not(tmp_path: Path) -> None:
    from beadm.esp.host import LibcMounts
    from beadm.runner import SubprocessRunner

    assert isinstance(SystemHost(SubprocessRunner()).mounter, LibcMounts)
    r = PropRunner()
    assert host(tmp_path, r).mounter is r


def _mountinfo(tmp: Path, *lines: tuple[str, str, str]) -> Path:
    """A mountinfo file: (mount point, per-mount options, dataset) zfs mounts after /."""
    text = "22 1 0:21 / / rw,relatime shared:1 - zfs rpool/ROOT/pve-1 rw,xattr\n"
    for n, (where, opts, ds) in enumerate(lines, 30):
        text += f"{n} 22 0:{n} / {where} {opts} shared:{n} - zfs {ds} rw,xattr\n"
    path = tmp / "mountinfo"
    path.write_text(text)
    return path


PVE2 = BeRef("pve-2", "rpool/ROOT/pve-2")


def _host_with_pve2_at(tmp: Path, where: str, opts: str) -> tuple[PropRunner, SystemHost]:
    r = PropRunner()
    h = host(tmp, r)
    h.mountinfo = _mountinfo(tmp, (where, opts, PVE2.dataset))
    return r, h


def test_a_be_mounted_already_is_used_where_it_is_and_left_mounted(tmp_path: Path) -> None:
    """`beadm mount pve-2 /mnt/x`, then a command that looks into pve-2: ZFS refuses a second
    mount of a mounted dataset, so the session uses /mnt/x (writable: it is rw), mounts
    nothing for it and does not unmount it."""
    r, h = _host_with_pve2_at(tmp_path, "/mnt/x", "rw,relatime")
    be = PVE2
    with h.session() as s:
        assert s.be_root(be, writable=False) == Path("/mnt/x")
        assert s.be_root(be, writable=True) == Path("/mnt/x")
        assert s.be_root(BeRef("pve-3", "rpool/ROOT/pve-3"), writable=False) != Path("/mnt/x")
    zfs = [c for c in mounts(r) if "zfs" in c or (c[0] == "umount" and "be-" in c[-1])]
    assert [c[-2] for c in zfs if c[0] == "mount"] == ["rpool/ROOT/pve-3"]
    assert all("/mnt/x" not in c for c in r.calls)


def test_a_be_mounted_read_only_elsewhere_is_not_remounted_for_writing(tmp_path: Path) -> None:
    r, h = _host_with_pve2_at(tmp_path, "/mnt/ro", "ro,relatime")
    be = PVE2
    with h.session() as s:
        assert s.be_root(be, writable=False) == Path("/mnt/ro")
        with pytest.raises(BootError, match="BE pve-2 is mounted read-only at /mnt/ro: "
                                            "unmount it"):
            s.be_root(be, writable=True)
    assert not any("remount" in " ".join(c) for c in r.calls)
