"""Issue 23.4: a BE is untrusted data, never follow a link out of it.

A non-running BE is mounted below /run/beadm-*; an absolute link in it resolves on the
host. Here the BE roots are temporary directories and "the host" is another one: a link
``etc/kernel -> <host>/etc/kernel`` is the same attack as ``etc/kernel -> /etc/kernel``
on a real machine (the target exists outside the BE, not inside it). Every path beadm
reads or writes inside a BE is checked: the host's file is neither read nor written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from beadm import confined
from beadm.errors import BootError
from beadm.esp import cmdline as cmd
from beadm.esp import esplist, hooks, kernels, persist
from beadm.esp.store import EspStore, content_name
from beadm.grub import zfscfg
from worlds.grub import GrubWorld
from worlds.sdboot import K1, World

HOST_LINE = "root=ZFS=rpool/ROOT/host-only boot=zfs host-secret-option"
SECRET = b"root:$y$host-shadow-hash:19000:0:99999:7:::\n"


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """The running system's files, outside every BE."""
    h = tmp_path / "host"
    (h / "etc/kernel/postinst.d").mkdir(parents=True)
    (h / "etc/kernel/cmdline").write_text(HOST_LINE + "\n")
    (h / "etc/kernel/proxmox-boot-uuids").write_text("HOST-0001\n")
    (h / "etc/default/grub.d").mkdir(parents=True)
    (h / "etc/default/grub.d/zfs.cfg").write_text(
        'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX root=ZFS=rpool/ROOT/host-only boot=zfs"\n')
    (h / "etc/shadow").write_bytes(SECRET)
    (h / "etc/systemd/system").mkdir(parents=True)
    (h / "etc/apt/apt.conf.d").mkdir(parents=True)
    (h / "etc/initramfs/post-update.d").mkdir(parents=True)
    return h


def snapshot(root: Path) -> dict[str, bytes | str]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def be_tree(tmp_path: Path, name: str = "be") -> Path:
    root = tmp_path / name
    (root / "boot").mkdir(parents=True)
    (root / "etc").mkdir()
    return root


# -- the module ---------------------------------------------------------------------


def test_reads_follow_links_inside_the_root_only(tmp_path: Path, host: Path) -> None:
    root = be_tree(tmp_path)
    (root / "etc/kernel").mkdir()
    (root / "etc/kernel/cmdline").write_text("inside\n")
    (root / "etc/abs").symlink_to("/etc/kernel/cmdline")  # inside: the BE's own file
    (root / "etc/rel").symlink_to("kernel/cmdline")
    (root / "etc/up").symlink_to("../../../../../../etc/kernel/cmdline")  # .. stops at /
    (root / "etc/out").symlink_to(host / "etc/kernel/cmdline")  # the host's: missing here
    for name in ("abs", "rel", "up"):
        assert confined.read_text(root, f"etc/{name}") == "inside\n"
    with pytest.raises(FileNotFoundError):
        confined.read_bytes(root, "etc/out")
    (root / "etc/loop").symlink_to("/etc/loop")
    with pytest.raises(OSError, match="loop"):
        confined.read_bytes(root, "etc/loop")
    assert confined.resolve(root, "etc/abs") == root / "etc/kernel/cmdline"
    assert confined.listdir(root, "/etc/kernel") == ["cmdline"]


def test_writes_refuse_every_link_on_the_path(tmp_path: Path, host: Path) -> None:
    root = be_tree(tmp_path)
    (root / "etc/kernel").symlink_to(host / "etc/kernel")
    before = snapshot(host)
    with pytest.raises(confined.LinkRefused, match=r"^/etc/kernel is a symbolic link"):
        confined.write_file(root, "etc/kernel/cmdline", b"x\n")
    (root / "etc/kernel").unlink()
    (root / "etc/kernel").mkdir()
    (root / "etc/kernel/cmdline").symlink_to(host / "etc/kernel/cmdline")
    with pytest.raises(confined.LinkRefused, match=r"^/etc/kernel/cmdline is a symbolic"):
        confined.write_file(root, "etc/kernel/cmdline", b"x\n")
    assert snapshot(host) == before
    (root / "etc/kernel/cmdline").unlink()
    confined.write_file(root, "etc/kernel/sub/cmdline", b"ok\n", mode=0o600)
    assert (root / "etc/kernel/sub/cmdline").read_bytes() == b"ok\n"
    assert oct((root / "etc/kernel/sub/cmdline").stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in (root / "etc/kernel/sub").iterdir()] == ["cmdline"]


# -- each path beadm reads or writes in a BE -------------------------------------------


def test_cmdline_is_not_read_from_the_host(tmp_path: Path, host: Path) -> None:
    root = be_tree(tmp_path)
    (root / "etc/kernel").symlink_to(host / "etc/kernel")
    got = cmd.wanted(root, "be", "rpool/ROOT/be", "root=ZFS=x boot=zfs fallback")
    assert "host-secret-option" not in got


def test_sync_does_not_rewrite_the_hosts_cmdline(sdboot_world: World) -> None:
    """etc/kernel -> /etc/kernel (here: the running BE's tree): sync refuses that BE in
    one line; the running BE's cmdline is not rewritten to boot it."""
    w = sdboot_world
    w.backend.init(w.ref("pve-1"))
    root = w.add_be("pve-2", {K1: b"kernel-x"})
    running = w.bes["rpool/ROOT/pve-1"]
    before = (running / "etc/kernel/cmdline").read_text()
    for p in (root / "etc/kernel").iterdir():
        p.unlink()
    (root / "etc/kernel").rmdir()
    (root / "etc/kernel").symlink_to(running / "etc/kernel")
    with pytest.raises(BootError) as exc:
        w.backend.sync(w.refs())
    assert "\n" not in exc.value.message and "BE pve-2" in exc.value.message
    assert (running / "etc/kernel/cmdline").read_text() == before
    assert not [e for u in w.esps for e in w.entries(u) if "pve-2" in e]


def test_hooks_are_not_installed_on_the_host(tmp_path: Path, host: Path) -> None:
    root = be_tree(tmp_path)
    (root / "etc/initramfs").symlink_to(host / "etc/initramfs")
    before = snapshot(host)
    with pytest.raises(confined.LinkRefused, match=r"^/etc/initramfs is a symbolic link"):
        hooks.install(root)
    assert snapshot(host) == before


def test_persist_is_not_installed_on_the_host(tmp_path: Path, host: Path) -> None:
    root = be_tree(tmp_path)
    (root / "etc/apt").mkdir()
    (root / "etc/apt/apt.conf.d").symlink_to(host / "etc/apt/apt.conf.d")
    (root / "etc/systemd").symlink_to(host / "etc/systemd")
    before = snapshot(host)
    with pytest.raises(confined.LinkRefused):
        persist.install(root)
    (root / "etc/apt/apt.conf.d").unlink()
    with pytest.raises(confined.LinkRefused, match=r"^/etc/systemd is a symbolic link"):
        persist.install(root)
    assert snapshot(host) == before


def test_esp_list_is_neither_read_nor_carried_through_a_link(tmp_path: Path,
                                                             host: Path) -> None:
    root = be_tree(tmp_path)
    (root / "etc/kernel").symlink_to(host / "etc/kernel")
    want = esplist.EspList("proxmox-boot-uuids", "HOST-0002\n", ("HOST-0002",), 0o644)
    drift = esplist.drift(root, want)
    assert [d.have for d in drift] == [None]  # the BE has no list of its own
    before = snapshot(host)
    with pytest.raises(confined.LinkRefused):
        esplist.carry(root, drift, want)
    assert snapshot(host) == before


def test_grub_zfs_cfg_is_neither_read_nor_fixed_through_a_link(tmp_path: Path,
                                                               host: Path) -> None:
    root = be_tree(tmp_path)
    (root / "etc/default").mkdir()
    (root / "etc/default/grub.d").symlink_to(host / "etc/default/grub.d")
    before = snapshot(host)
    assert zfscfg.drift(root, "rpool/ROOT/be") is None  # no zfs.cfg of its own
    assert zfscfg.fix(root, "rpool/ROOT/be") is False
    assert snapshot(host) == before
    (root / "etc/default/grub.d").unlink()
    (root / "etc/default/grub.d").mkdir()
    (root / "etc/default/grub.d/zfs.cfg").symlink_to(host / "etc/default/grub.d/zfs.cfg")
    assert zfscfg.fix(root, "rpool/ROOT/be") is False
    assert snapshot(host) == before


def test_grub_backend_sync_leaves_the_hosts_zfs_cfg(tmp_path: Path, host: Path) -> None:
    w = GrubWorld(tmp_path / "w")
    w.backend.init(w.ref("pve-1"))
    root = w.add_be("pve-2", {"6.8.12-1-pve": b"k"})
    cfg = root / "etc/default/grub.d/zfs.cfg"
    if cfg.exists():
        cfg.unlink()
    cfg.symlink_to(host / "etc/default/grub.d/zfs.cfg")
    before = snapshot(host)
    try:
        w.backend.sync(w.refs())  # the zfs.cfg drift check repairs
    except BootError as exc:
        assert "\n" not in exc.message
    assert snapshot(host) == before
    assert cfg.is_symlink()  # left alone: not replaced by an edited copy of the host's


def test_kernels_must_be_regular_files_inside_the_be(tmp_path: Path, host: Path) -> None:
    root = be_tree(tmp_path)
    boot = root / "boot"
    (boot / "vmlinuz-9.9-evil").symlink_to(host / "etc/shadow")
    (boot / "initrd.img-9.9-evil").write_bytes(b"i")
    (boot / "vmlinuz-1.0-ok").write_bytes(b"k")
    (boot / "initrd.img-1.0-ok").write_bytes(b"i")
    (boot / "vmlinuz-2.0-rel").symlink_to("vmlinuz-1.0-ok")  # in-tree: fine
    (boot / "initrd.img-2.0-rel").symlink_to("/boot/initrd.img-1.0-ok")  # as the BE sees it
    found = kernels.find(root)
    assert [k.kver for k in found] == ["2.0-rel", "1.0-ok"]
    assert found[0].vmlinuz == boot / "vmlinuz-1.0-ok"
    assert found[0].initrd == boot / "initrd.img-1.0-ok"


def test_kernels_in_a_boot_that_links_out_are_not_found(tmp_path: Path, host: Path) -> None:
    root = tmp_path / "be"
    root.mkdir()
    (host / "boot").mkdir()
    (host / "boot/vmlinuz-1").write_bytes(b"k")
    (host / "boot/initrd.img-1").write_bytes(b"i")
    (root / "boot").symlink_to(host / "boot")
    assert kernels.find(root) == []


def test_pins_are_not_read_from_the_host(tmp_path: Path, host: Path) -> None:
    root = be_tree(tmp_path)
    (host / "etc/kernel/proxmox-boot-pin").write_text("6.6.6-host\n")
    (root / "etc/kernel").symlink_to(host / "etc/kernel")
    assert kernels.pin_of(root) is None


def test_the_store_does_not_copy_a_link(tmp_path: Path, host: Path) -> None:
    esp = tmp_path / "esp"
    esp.mkdir()
    st = EspStore(esp, "AAAA-0001")
    src = tmp_path / "vmlinuz-1"
    src.symlink_to(host / "etc/shadow")  # swapped in after kernels.find looked
    with pytest.raises((OSError, BootError)):
        st.put_file(src, "vmlinuz-1")
    with pytest.raises(OSError):
        content_name(src, "vmlinuz-1")
    assert not [p for p in esp.rglob("*") if p.is_file() and p.read_bytes() == SECRET]


def test_the_store_does_not_write_through_a_link_on_the_esp(tmp_path: Path,
                                                            host: Path) -> None:
    esp = tmp_path / "esp"
    (esp / "loader").mkdir(parents=True)
    (esp / "loader/entries").symlink_to(host / "etc/systemd")
    st = EspStore(esp, "AAAA-0001")
    before = snapshot(host)
    from beadm.esp import entries as ent
    with pytest.raises(BootError, match="symbolic link"):
        st.write_entry("beadm-x-1.conf", ent.Entry(title="x", linux="/beadm/a",
                                                   initrd=("/beadm/b",), options="o"))
    assert snapshot(host) == before


def test_sync_reports_a_be_whose_kernel_links_out(tmp_path: Path) -> None:
    """boot/vmlinuz-X -> /etc/shadow: no ESP gets the host's file."""
    w = World(tmp_path)
    w.backend.init(w.ref("pve-1"))
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    root = w.add_be("pve-2")
    (root / "boot/vmlinuz-6.6.6-evil").symlink_to(secret)
    (root / "boot/initrd.img-6.6.6-evil").write_bytes(b"initrd")
    with pytest.raises(BootError, match="BE pve-2 has no kernel"):
        w.backend.sync(w.refs())
    for esp in w.esps.values():
        assert not [p for p in esp.rglob("*") if p.is_file() and p.read_bytes() == SECRET]


def test_running_root_reads_resolve_as_the_system_does() -> None:
    """In ``/`` the confined resolution is the system's own (Debian's /etc/os-release is
    a relative link to ../usr/lib/os-release)."""
    path = "/etc/os-release"
    if not Path(path).exists():
        pytest.skip("no /etc/os-release here")
    assert confined.read_bytes(Path("/"), path) == Path(path).read_bytes()
    assert confined.resolve(Path("/"), path) == Path(path).resolve()
