"""loader.conf (beadm.esp.loaderconf): beadm's default replaces every default line."""

from __future__ import annotations

from beadm.esp import loaderconf


def test_loaderconf_replaces_every_default_keeps_the_rest() -> None:
    text = "timeout 3\ndefault proxmox-*\nconsole-mode max\ndefault x\n"
    new = loaderconf.set_default(text, "beadm-pve-2-6.1.conf")
    assert new == "timeout 3\ndefault beadm-pve-2-6.1.conf\nconsole-mode max\n"
    assert loaderconf.get_default(new) == "beadm-pve-2-6.1.conf"
    assert loaderconf.get_default(text) == "x"
    assert loaderconf.set_default("timeout 3\n", "a") == "timeout 3\ndefault a\n"
