"""The kernel command line of a BE's entries (beadm.esp.cmdline)."""

from __future__ import annotations

from pathlib import Path

from beadm.esp import cmdline


def test_cmdline_with_root_keeps_admin_options() -> None:
    line = "root=ZFS=rpool/ROOT/pve-1 boot=zfs quiet intel_iommu=on root=/dev/sda"
    assert cmdline.with_root(line, "rpool/ROOT/pve-2") == (
        "root=ZFS=rpool/ROOT/pve-2 boot=zfs quiet intel_iommu=on")
    assert cmdline.with_root("quiet", "p/ROOT/x") == "root=ZFS=p/ROOT/x quiet boot=zfs"
    assert cmdline.with_root("BOOT_IMAGE=/v initrd=\\i root=ZFS=a boot=zfs", "p/R/x") == (
        "root=ZFS=p/R/x boot=zfs")


def test_cmdline_template_is_honoured(tmp_path: Path) -> None:
    (tmp_path / "etc/kernel").mkdir(parents=True)
    (tmp_path / "etc/kernel/cmdline").write_text("root=ZFS=rpool/ROOT/old boot=zfs\n")
    assert cmdline.wanted(tmp_path, "new", "rpool/ROOT/new") == "root=ZFS=rpool/ROOT/new boot=zfs"
    (tmp_path / "etc/kernel/cmdline.template").write_text(
        "root=ZFS=rpool/ROOT/__BE_NAME boot=zfs mitigations=off\n")
    assert cmdline.wanted(tmp_path, "new", "rpool/ROOT/new") == (
        "root=ZFS=rpool/ROOT/new boot=zfs mitigations=off")
