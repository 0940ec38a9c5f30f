"""Issue 15: the backend's session is held for a whole command, in a private mount
namespace; every command that must run in the host's namespace releases it first."""

from __future__ import annotations

import pytest
from fakes import FakeRunner

from beadm.be import _HostNsRunner, _needs_host_ns


@pytest.mark.parametrize(("argv", "host"), [
    (("mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/pve-2", "/mnt"), True),
    (("umount", "/mnt"), True),
    (("zfs", "destroy", "-r", "rpool/ROOT/pve-2"), True),
    (("zfs", "rename", "-u", "rpool/ROOT/a", "rpool/ROOT/b"), True),
    (("zfs", "promote", "rpool/ROOT/b"), True),
    (("zfs", "create", "-o", "mountpoint=/var/lib/vz", "rpool/var-lib-vz"), True),
    (("zfs", "set", "mountpoint=/x", "rpool/x"), True),
    (("zfs", "set", "canmount=off", "rpool/x"), True),
    (("proxmox-boot-tool", "refresh"), True),
    (("systemctl", "stop", "pve-cluster"), True),
    (("zfs", "set", "canmount=noauto", "rpool/ROOT/pve-1"), False),
    (("zfs", "set", "org.beadm:state=renaming:a", "rpool/ROOT/a"), False),
    (("zfs", "inherit", "org.beadm:state", "rpool/ROOT/a"), False),
    (("zfs", "snapshot", "-r", "rpool/ROOT/pve-1@x"), False),
    (("zfs", "clone", "-o", "canmount=noauto", "rpool/ROOT/pve-1@x", "rpool/ROOT/b"), False),
    (("zpool", "set", "bootfs=rpool/ROOT/b", "rpool"), False),
])
def test_which_commands_need_the_hosts_namespace(argv: tuple[str, ...], host: bool) -> None:
    assert _needs_host_ns(argv) is host


def test_released_before_each_such_command_not_before_queries_or_others() -> None:
    inner = FakeRunner()
    log: list[str] = []
    r = _HostNsRunner(inner, lambda: log.append("release"))
    r.run(["zfs", "list", "-H", "rpool"], readonly=True)
    r.run(["mount", "-t", "zfs", "-o", "ro,zfsutil", "rpool/ROOT/x", "/tmp/x"], readonly=True)
    r.run(["zfs", "inherit", "org.beadm:state", "rpool/ROOT/x"])
    assert log == []
    r.run(["zfs", "destroy", "rpool/ROOT/x"])
    assert log == ["release"]
    assert [c[:2] for c in inner.calls] == [("zfs", "list"), ("mount", "-t"), ("zfs", "inherit"),
                                            ("zfs", "destroy")]
    assert r.dry_run is False
