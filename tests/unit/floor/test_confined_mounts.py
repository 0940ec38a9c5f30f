"""Issue 23.4, the rest of the class: what beadm mounts on, bind-mounts over or writes in a BE
tree outside the ESP paths (beadm mount, the activate guard's peek, upgrade's clone, the
shared-state drop-ins) never goes through a link out of the BE. mount(8) follows links: a
BE with ``var -> /etc`` would get its /var dataset mounted over the host's /etc."""

from __future__ import annotations

from pathlib import Path

import pytest

from beadm import confined, statedropins
from beadm.errors import UpgradeError
from beadm.peek import look_into
from worlds.fakes import FakeRunner
from worlds.pool import manager
from worlds.upgrade import ChrootRunner, chroot_dir, make

R = "rpool/ROOT"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    h = tmp_path / "host"
    (h / "etc/kernel").mkdir(parents=True)
    (h / "etc/kernel/proxmox-boot-uuids").write_text("HOST-0001\n")
    (h / "usr/sbin").mkdir(parents=True)
    (h / "systemd").mkdir()
    return h


def snapshot(root: Path) -> dict[str, bytes | str]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_beadm_mount_never_mounts_a_child_through_a_link(tmp_path: Path, host: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    where = tmp_path / "mnt"
    where.mkdir()
    runner.on("mount", "-t", "zfs", "-o", "zfsutil", f"{R}/pve-2",
              hook=lambda a: (Path(a[-1]) / "var").symlink_to(host / "etc"))
    with pytest.raises(confined.LinkRefused, match=r"^/var is a symbolic link"):
        mgr.mount("pve-2", str(where))
    assert not [c for c in runner.changes if c[:2] == ("mount", "-t") and c[-1].endswith("var")]
    assert ("umount", str(where)) in runner.changes  # the root dataset is let go


def test_peek_never_mounts_a_child_through_a_link(tmp_path: Path, host: Path) -> None:
    runner = FakeRunner()
    runner.on("mount", "-t", "zfs", "-o", "ro,zfsutil", f"{R}/pve-2",
              hook=lambda a: (Path(a[-1]) / "etc").symlink_to(host / "etc"))
    plan = [(f"{R}/pve-2", ""), (f"{R}/pve-2/etc", "/etc")]
    with look_into(runner, plan, [], ["/etc"]) as top:
        assert [c[-1] for c in runner.calls if c[0] == "mount"] == [str(top)]
        (top / "etc").unlink()


def test_upgrade_writes_no_policy_rc_d_through_a_link(tmp_path: Path, host: Path) -> None:
    seen: list[bool] = []

    class Runner(ChrootRunner):
        def run(self, argv, *, readonly=False, check=True, on_line=None):  # type: ignore[no-untyped-def]
            args = tuple(argv)
            if args[0] == "chroot":
                seen.append((host / "usr/sbin/policy-rc.d").exists())
            res = super().run(argv, readonly=readonly, check=check, on_line=on_line)
            if args[:3] == ("mount", "-t", "zfs") and args[-1].endswith("/root"):
                (Path(args[-1]) / "usr").symlink_to(host / "usr")
            return res

    runner = Runner()
    mgr, _, _ = make(tmp_path, runner)
    with pytest.raises(UpgradeError, match="/usr is a symbolic link"):
        mgr.upgrade("pve-3")
    assert seen == [] or not any(seen)
    assert snapshot(host / "usr") == {"sbin": "dir"}


def test_upgrade_hides_the_esp_list_where_the_clone_finds_it(tmp_path: Path,
                                                             host: Path) -> None:
    """etc/kernel -> <host>/etc/kernel: the clone has no list of its own (the link leads
    nowhere inside it): nothing is bound over the host's list."""

    class Runner(ChrootRunner):
        def run(self, argv, *, readonly=False, check=True, on_line=None):  # type: ignore[no-untyped-def]
            args = tuple(argv)
            res = super().run(argv, readonly=readonly, check=check, on_line=on_line)
            if args[:3] == ("mount", "-t", "zfs") and args[-1].endswith("/root"):
                (Path(args[-1]) / "etc/kernel").symlink_to(host / "etc/kernel")
            return res

    runner = Runner(tree=("etc/hostname",))
    mgr, _, _ = make(tmp_path, runner)
    mgr.upgrade("pve-3")
    root = chroot_dir(runner)
    binds = [c for c in runner.changes if c[:2] == ("mount", "--bind")]
    assert [c[-1] for c in binds] == []  # no list: none bound (policy-rc.d was written)
    assert not (Path(root) / "usr/sbin/policy-rc.d").exists()


def test_shared_state_drop_ins_are_not_written_through_a_link(tmp_path: Path,
                                                              host: Path) -> None:
    root = tmp_path / "be"
    (root / "etc/systemd").mkdir(parents=True)
    (root / "etc/systemd/system").symlink_to(host / "systemd")
    with pytest.raises(confined.LinkRefused, match=r"^/etc/systemd/system is a symbolic"):
        statedropins.write_units(root, {"pve-cluster.service": "[Unit]\n"}, dry_run=False,
                             out=__import__("io").StringIO())
    assert snapshot(host / "systemd") == {}


def test_own_copies_are_not_looked_for_outside_the_be(tmp_path: Path, host: Path) -> None:
    root = tmp_path / "be"
    root.mkdir()
    (root / "etc").symlink_to(host / "etc")  # the host's /etc/kernel is not empty
    assert statedropins.own_copies(root, ["/etc/kernel"]) == []


def test_destroy_guard_reads_each_be_as_it_sees_itself(tmp_path: Path, host: Path) -> None:
    """A file only BE pve-2 holds is not "found" in BE pve-3 through pve-3's link to the
    host's /var."""
    from beadm import vzguard

    be2, be3, live = tmp_path / "be2", tmp_path / "be3", tmp_path / "live"
    for d in (be2 / "var/lib/vz/dump", host / "var/lib/vz/dump", live):
        d.mkdir(parents=True)
    (be2 / "var/lib/vz/dump/a.vma").write_bytes(b"backup")
    (host / "var/lib/vz/dump/a.vma").write_bytes(b"backup")
    be3.mkdir()
    (be3 / "var").symlink_to(host / "var")
    views = {f"{R}/pve-2": lambda: be2, f"{R}/pve-3": lambda: be3}
    got = vzguard.unique_files(FakeRunner(), [(f"{R}/pve-2", "")], [[(f"{R}/pve-3", "")]], [],
                               live=live, views=views)
    assert got == ["dump/a.vma"]
