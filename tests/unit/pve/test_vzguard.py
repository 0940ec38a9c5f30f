"""destroy refuses a BE whose /var/lib/vz holds backups, ISOs or templates found nowhere else
(beadm.vzguard); the BEs are looked at through read-only mounts (fake runner, real files)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from beadm import vzguard
from beadm.errors import RefusedError
from worlds.pool import manager, row

R = "rpool/ROOT"
RUNNING = f"1 0 0:1 / / rw - zfs {R}/cur rw\n"
LISTING = "".join([
    row(R, canmount="off"),
    row(f"{R}/cur", mountpoint="/", mounted="yes", canmount="on"),
    row(f"{R}/old", mountpoint="/"),
    row(f"{R}/old/var", mountpoint="/var"),
    row(f"{R}/other", mountpoint="/"),
])


def fill(top: Path, files: dict[str, int]) -> None:
    for rel, size in files.items():
        p = top / "var/lib/vz" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * size)


def world(tmp_path: Path, content: dict[str, dict[str, int]]):  # type: ignore[no-untyped-def]
    """A manager whose BEs' datasets show ``content`` (BE -> files) when mounted."""
    mgr, runner, _backend = manager(tmp_path, listing=LISTING, mountinfo=RUNNING,
                                   bootfs=f"{R}/cur")
    src: dict[str, Path] = {}
    for be, files in content.items():
        top = tmp_path / "be" / be
        fill(top, files)
        src[f"{R}/{be}"] = top
        if be == "old":  # /var is a child dataset of old: its files belong to old/var
            (top / "var").rename(tmp_path / "be" / f"{be}-var")
            (top / "var").mkdir()
            src[f"{R}/{be}/var"] = tmp_path / "be" / f"{be}-var"
    mounted: list[tuple[str, str]] = []

    def mount(argv: tuple[str, ...]) -> None:
        assert argv[4] == "ro,zfsutil", "a BE must be looked at read-only"
        mounted.append((argv[-2], argv[-1]))
        if argv[-2] in src:
            shutil.copytree(src[argv[-2]], argv[-1], dirs_exist_ok=True)

    def umount(argv: tuple[str, ...]) -> None:
        for p in Path(argv[-1]).iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    runner.on("mount", "-t", "zfs", hook=mount)
    runner.on("umount", hook=umount)
    return mgr, runner, mounted


def test_destroy_refuses_a_be_holding_the_only_copy_and_names_it(tmp_path: Path) -> None:
    mgr, runner, mounted = world(tmp_path, {
        "old": {"dump/vzdump-qemu-100-2026_11_01.vma.zst": 40, "template/iso/a.iso": 7,
                "images/100/disk.raw": 9},
        "other": {"template/iso/a.iso": 7},
    })
    with pytest.raises(RefusedError) as exc:
        mgr.destroy("old")
    assert str(exc.value) == (
        "BE old holds files found nowhere else: "
        "/var/lib/vz/dump/vzdump-qemu-100-2026_11_01.vma.zst, /var/lib/vz/images/100/disk.raw; "
        "copy them to /var/lib/vz (beadm mount old) or destroy with -F")
    assert runner.changes == []
    assert (f"{R}/old/var", mounted[1][1]) in mounted  # the child dataset holding /var
    assert [ds for ds, _ in mounted] == [f"{R}/old", f"{R}/old/var", f"{R}/other"]
    # the destroy_check the CLI runs before asking says the same
    with pytest.raises(RefusedError, match="vzdump-qemu-100"):
        mgr.destroy_check("old")


def test_names_a_few_then_counts(tmp_path: Path) -> None:
    files = {f"dump/b{i}.vma.zst": 10 + i for i in range(5)} | {"template/cache/ct.tar.zst": 3}
    mgr, _, _ = world(tmp_path, {"old": files})
    with pytest.raises(RefusedError, match=r"b2\.vma\.zst and 3 more; copy them"):
        mgr.destroy("old")


def test_same_name_and_size_in_another_be_is_not_unique(tmp_path: Path) -> None:
    same = {"dump/a.vma.zst": 10, "template/iso/b.iso": 4}
    mgr, runner, _ = world(tmp_path, {"old": same, "other": same})
    mgr.destroy("old")
    assert ("zfs", "destroy", "-r", f"{R}/old") in runner.changes


def test_same_name_other_size_is_unique(tmp_path: Path) -> None:
    mgr, _, _ = world(tmp_path, {"old": {"dump/a.vma.zst": 10},
                                 "other": {"dump/a.vma.zst": 11}})
    with pytest.raises(RefusedError, match=r"dump/a\.vma\.zst"):
        mgr.destroy("old")


def test_force_destroys_without_looking(tmp_path: Path) -> None:
    mgr, runner, mounted = world(tmp_path, {"old": {"dump/a.vma.zst": 10}})
    mgr.destroy("old", force=True)
    assert mounted == []
    assert ("zfs", "destroy", "-r", f"{R}/old") in runner.changes


def test_files_under_the_live_var_lib_vz_are_not_unique(tmp_path: Path) -> None:
    _mgr, runner, _ = world(tmp_path, {"old": {"dump/a.vma.zst": 10}})
    live = tmp_path / "live"
    fill(live, {"dump/a.vma.zst": 10})
    plan = [(f"{R}/old", ""), (f"{R}/old/var", "/var")]
    assert vzguard.unique_files(runner, plan, [], [], live=live / "var/lib/vz") == []
    assert vzguard.unique_files(runner, plan, [], [], live=tmp_path / "none") == [
        "dump/a.vma.zst"]


def test_guest_disks_and_container_roots_count_as_unique(tmp_path: Path) -> None:
    """A BE may hold the only copy of a VM disk (images/) or of a container's root file
    system (private/, images/<id>/subvol-*): destroying it loses the guest."""
    mgr, runner, _ = world(tmp_path, {
        "old": {"images/101/vm-101-disk-0.qcow2": 12, "private/102/etc/hostname": 5,
                "images/103/subvol-103-disk-0/etc/os-release": 6, "snippets/user.yaml": 3},
        "other": {"template/iso/a.iso": 7},
    })
    with pytest.raises(RefusedError) as exc:
        mgr.destroy("old")
    assert ("/var/lib/vz/images/101/vm-101-disk-0.qcow2, "
            "/var/lib/vz/images/103/subvol-103-disk-0/etc/os-release, "
            "/var/lib/vz/private/102/etc/hostname and 1 more;") in str(exc.value)
    assert runner.changes == []
    assert sorted(vzguard.content(tmp_path / "be/old-var/lib/vz")) == [
        "images/101/vm-101-disk-0.qcow2", "images/103/subvol-103-disk-0/etc/os-release",
        "private/102/etc/hostname", "snippets/user.yaml"]
