"""The argv each :class:`beadm.zfs.Zfs` command builds, with the runner flags it passes:
every zfs/zpool command and every ZFS mount of beadm is built in beadm.zfs (issue 24)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from beadm.errors import CommandError
from beadm.runner import Result
from beadm.zfs import Zfs, mount_argv


class Recorder:
    """A runner that records (argv, readonly, check) and answers ``returncode``/``stdout``."""

    def __init__(self, *, returncode: int = 0, stdout: str = "") -> None:
        self.calls: list[tuple[tuple[str, ...], bool, bool]] = []
        self.returncode = returncode
        self.stdout = stdout

    @property
    def dry_run(self) -> bool:
        return False

    def run(self, argv: Sequence[str], *, readonly: bool = False, check: bool = True,
            on_line: object = None) -> Result:
        args = tuple(argv)
        self.calls.append((args, readonly, check))
        if self.returncode and check:
            raise CommandError(list(args), self.returncode, "boom")
        return Result(args, self.returncode, self.stdout, "")


def test_mount_argv_is_the_zfs_helper_form() -> None:
    assert mount_argv("rpool/ROOT/a") == ["mount", "-t", "zfs", "-o", "zfsutil", "rpool/ROOT/a"]
    assert mount_argv("rpool/ROOT/a", ro=True) == [
        "mount", "-t", "zfs", "-o", "ro,zfsutil", "rpool/ROOT/a"]


@pytest.mark.parametrize(("ro", "readonly", "opts"), [
    (False, False, "zfsutil"), (True, True, "ro,zfsutil"), (True, False, "ro,zfsutil"),
    (False, True, "zfsutil")])
def test_mount_at_runs_the_helper_form_with_the_runner_flag(
        ro: bool, readonly: bool, opts: str) -> None:
    r = Recorder()
    Zfs(r).mount_at("rpool/ROOT/a/var", "/tmp/x/var", ro=ro, readonly=readonly)
    assert r.calls == [(("mount", "-t", "zfs", "-o", opts, "rpool/ROOT/a/var", "/tmp/x/var"),
                        readonly, True)]


def test_zfs_mount_is_a_change() -> None:
    r = Recorder()
    Zfs(r).mount("rpool/data/pve")
    assert r.calls == [(("zfs", "mount", "rpool/data/pve"), False, True)]


def test_create_passes_the_properties_in_order() -> None:
    r = Recorder()
    Zfs(r).create("rpool/data/x", [("canmount", "noauto"), ("mountpoint", "/var/lib/x"),
                                   ("org.beadm:state", "moving")])
    assert r.calls == [(("zfs", "create", "-o", "canmount=noauto", "-o", "mountpoint=/var/lib/x",
                         "-o", "org.beadm:state=moving", "rpool/data/x"), False, True)]
    r = Recorder()
    Zfs(r).create("rpool/data/y", [])
    assert r.calls == [(("zfs", "create", "rpool/data/y"), False, True)]


def test_version_is_an_unchecked_query() -> None:
    r = Recorder(returncode=1, stdout="")
    assert Zfs(r).version() == ""
    assert r.calls == [(("zfs", "version"), True, False)]
    r = Recorder(stdout="zfs-2.2.6-pve1\nzfs-kmod-2.2.6-pve1\n")
    assert Zfs(r).version() == "zfs-2.2.6-pve1\nzfs-kmod-2.2.6-pve1"


def test_user_property_get_set_inherit_and_exists() -> None:
    r = Recorder(stdout="pve-2\n")
    z = Zfs(r)
    assert z.get("rpool/ROOT", "org.beadm:next") == "pve-2"
    z.set("rpool/ROOT", "org.beadm:next", "pve-3")
    z.inherit("rpool/ROOT", "org.beadm:next")
    assert z.exists("rpool/ROOT")
    assert r.calls == [
        (("zfs", "get", "-H", "-p", "-o", "value", "org.beadm:next", "rpool/ROOT"), True, True),
        (("zfs", "set", "org.beadm:next=pve-3", "rpool/ROOT"), False, True),
        (("zfs", "inherit", "org.beadm:next", "rpool/ROOT"), False, True),
        (("zfs", "list", "-H", "-o", "name", "rpool/ROOT"), True, False)]
    assert Zfs(Recorder(stdout="-\n")).get("rpool/ROOT", "org.beadm:next") == ""
    assert not Zfs(Recorder(returncode=1)).exists("rpool/nope")
