"""What systemd-boot boots (beadm.sdboot.resolve): its order of precedence."""

from __future__ import annotations

from pathlib import Path

from beadm.esp import entries
from beadm.sdboot import resolve


def test_resolve_follows_systemd_boot_precedence(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("x")
    es = {n: entries.Entry(linux="/k") for n in
          ("proxmox-6.8.12-1-pve.conf", "proxmox-6.8.12-10-pve.conf", "beadm-b-1.conf",
           "beadm-a-1+0-3.conf", "auto-windows.conf")}
    es["beadm-nofile-1.conf"] = entries.Entry(linux="/missing")
    assert resolve.pick(tmp_path, es, oneshot=None, efi_default=None,
                        conf_default=None) == "proxmox-6.8.12-10-pve.conf"
    assert resolve.pick(tmp_path, es, oneshot=None, efi_default=None,
                        conf_default="proxmox-*") == "proxmox-6.8.12-10-pve.conf"
    assert resolve.pick(tmp_path, es, oneshot="beadm-b-1.conf", efi_default="proxmox-*",
                        conf_default=None) == "beadm-b-1.conf"
    assert resolve.pick(tmp_path, es, oneshot=None, efi_default="beadm-nofile-1.conf",
                        conf_default="beadm-b-*") == "beadm-b-1.conf"
    # lab.md: an explicit glob picks an exhausted entry; sort order puts it last
    assert resolve.pick(tmp_path, es, oneshot=None, efi_default=None,
                        conf_default="beadm-a-*") == "beadm-a-1+0-3.conf"
    assert resolve.sort_ids(resolve.usable(tmp_path, es))[-1] == "beadm-a-1+0-3.conf"
