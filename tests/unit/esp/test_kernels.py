"""Which kernels a BE's entries carry (beadm.esp.kernels)."""

from __future__ import annotations

from pathlib import Path

from beadm.esp import kernels


def test_kernels_newest_two_plus_running(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    for k in ("6.2.16-3-pve", "6.8.12-10-pve", "6.8.12-9-pve", "6.5.1-1-pve"):
        (boot / f"vmlinuz-{k}").write_text("k")
        (boot / f"initrd.img-{k}").write_text("i")
    (boot / "vmlinuz-7.0-noinitrd").write_text("k")
    got = [k.kver for k in kernels.find(tmp_path, keep="6.2.16-3-pve")]
    assert got == ["6.8.12-10-pve", "6.8.12-9-pve", "6.2.16-3-pve"]
