"""beadm.chroot against fake /proc trees (ns/mnt and root as symlinks, stat with the ppid)."""

from __future__ import annotations

from pathlib import Path

from beadm.chroot import in_chroot


class Proc:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proc = tmp / "proc"
        self.proc.mkdir()

    def add(self, pid: int, ppid: int, ns: str, root: str, comm: str = "sh") -> None:
        d = self.proc / str(pid)
        (d / "ns").mkdir(parents=True)
        nsfile = self.tmp / f"ns-{ns}"
        nsfile.touch()
        (d / "ns" / "mnt").symlink_to(nsfile)
        rootdir = self.tmp / "roots" / root
        rootdir.mkdir(parents=True, exist_ok=True)
        (d / "root").symlink_to(rootdir)
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0\n")

    def me(self, pid: int) -> None:
        (self.proc / "self").symlink_to(str(pid))


def test_a_plain_host_process_is_not_chrooted(tmp_path: Path) -> None:
    p = Proc(tmp_path)
    p.add(1, 0, "host", "host", comm="systemd")
    p.add(100, 1, "host", "host", comm="bash (login)")  # a ")" in comm does not confuse it
    p.add(200, 100, "host", "host")
    p.me(200)
    assert in_chroot(p.proc) is False


def test_apt_chrooted_by_beadm_upgrade_in_its_private_namespace(tmp_path: Path) -> None:
    p = Proc(tmp_path)
    p.add(1, 0, "host", "host")
    p.add(100, 1, "host", "host")       # beadm upgrade
    p.add(150, 100, "priv", "host")     # its helper in the private namespace
    p.add(200, 150, "priv", "clone")    # apt, chrooted into the clone
    p.add(300, 200, "priv", "clone")    # the kernel hook's beadm
    p.me(300)
    assert in_chroot(p.proc) is True


def test_a_chroot_in_the_hosts_namespace(tmp_path: Path) -> None:
    p = Proc(tmp_path)
    p.add(1, 0, "host", "host")
    p.add(200, 1, "host", "chroot")
    p.me(200)
    assert in_chroot(p.proc) is True


def test_a_pivot_root_tree_with_its_own_namespace_is_no_chroot(tmp_path: Path) -> None:
    """lab/trixie/enter without a pid namespace: pid 1 is the host's, in another mount
    namespace; the tree's topmost process pivoted, so its root is the tree's too."""
    p = Proc(tmp_path)
    p.add(1, 0, "host", "host")
    p.add(100, 1, "host", "host")
    p.add(150, 100, "tree", "tree")
    p.add(200, 150, "tree", "tree")
    p.me(200)
    assert in_chroot(p.proc) is False


def test_unreadable_proc_counts_as_no_chroot(tmp_path: Path) -> None:
    assert in_chroot(tmp_path / "none") is False
    p = Proc(tmp_path)
    p.add(200, 150, "host", "chroot")  # its parent is gone: nothing to compare with
    p.me(200)
    assert in_chroot(p.proc) is False


def test_the_real_proc_says_no_here() -> None:
    assert in_chroot() is False
