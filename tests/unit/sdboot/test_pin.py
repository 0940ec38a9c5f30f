"""Issue 11.4: Proxmox's kernel pins (``proxmox-boot-tool kernel pin V [--next-boot]``, files
in the BE's own /etc/kernel) choose which of the BE's kernels beadm's default boots."""

from __future__ import annotations

import pytest

from beadm.backend import KernelPin
from beadm.esp import entries as ent
from worlds.sdboot import K1, K2, UUIDS, World


@pytest.fixture
def w(sdboot_world: World) -> World:
    w = sdboot_world
    w.backend.init(w.ref("pve-1"))
    return w


def _pin(w: World, kver: str | None, *, next_boot: bool = False) -> None:
    f = w.bes["rpool/ROOT/pve-1"] / "etc/kernel" / ("next-boot-pin" if next_boot
                                                   else "proxmox-boot-pin")
    if kver is None:
        f.unlink(missing_ok=True)
    else:
        f.write_text(kver + "\n")


def _defaults(w: World) -> set[str | None]:
    from beadm.esp.store import EspStore

    return {w.efi("LoaderEntryDefault")} | {EspStore(w.esps[u], u).loader_default()
                                            for u in UUIDS}


def test_pinned_kernel_is_the_default_and_unpin_goes_back_to_newest(w: World) -> None:
    newest, older = sorted((K1, K2))[::-1]
    w.backend.activate(w.ref("pve-1"), temporary=False)
    assert _defaults(w) == {ent.entry_filename("pve-1", newest)}
    _pin(w, older)
    w.backend.sync(w.refs())  # what the hooks and the shutdown re-assert run
    assert _defaults(w) == {ent.entry_filename("pve-1", older)}
    assert w.backend.check(w.refs()).problems == ()
    _pin(w, None)
    w.backend.sync(w.refs())
    assert _defaults(w) == {ent.entry_filename("pve-1", newest)}


def test_next_boot_pin_wins_over_the_pin_until_it_is_removed(w: World) -> None:
    newest, older = sorted((K1, K2))[::-1]
    _pin(w, newest)
    _pin(w, older, next_boot=True)
    w.backend.activate(w.ref("pve-1"), temporary=False)
    assert _defaults(w) == {ent.entry_filename("pve-1", older)}
    _pin(w, None, next_boot=True)  # proxmox-boot-cleanup.service at the boot after
    w.backend.sync(w.refs())
    assert _defaults(w) == {ent.entry_filename("pve-1", newest)}


def test_pin_of_an_old_kernel_gets_its_entry_and_a_missing_one_a_warning(w: World) -> None:
    root = w.bes["rpool/ROOT/pve-1"]
    for kver in ("6.8.12-3-pve", "6.8.12-4-pve"):  # two newer: K1 falls out of the newest 2
        (root / "boot" / f"vmlinuz-{kver}").write_bytes(b"k" + kver.encode())
        (root / "boot" / f"initrd.img-{kver}").write_bytes(b"i" + kver.encode())
    oldest = sorted((K1, K2))[0]
    _pin(w, oldest)
    w.backend.activate(w.ref("pve-1"), temporary=False)
    assert _defaults(w) == {ent.entry_filename("pve-1", oldest)}
    for u in UUIDS:
        assert ent.entry_filename("pve-1", oldest) in w.entries(u)
        assert w.booted(u) == "pve-1"
    _pin(w, "9.9.9-9-pve")
    warned = w.backend.sync(w.refs())
    assert _defaults(w) == {ent.entry_filename("pve-1", "6.8.12-4-pve")}
    assert any("pinned kernel 9.9.9-9-pve" in n for n in warned)


def test_list_and_check_show_the_pin_of_the_running_be(w: World) -> None:
    """Issue 11.4: ``list`` (boot_state) and ``check`` (its notes) say which kernel a pin makes
    the BE boot, and say so when the pinned kernel is not in the BE."""
    _newest, older = sorted((K1, K2))[::-1]
    assert w.backend.boot_state(w.refs()).pins == ()
    _pin(w, older, next_boot=True)
    w.backend.sync(w.refs())
    assert w.backend.boot_state(w.refs()).pins == (KernelPin("pve-1", older, True, True),)
    checked = w.backend.check(w.refs())
    assert checked.problems == ()
    assert checked.notes == (KernelPin("pve-1", older, True, True).describe(),)
    assert "next boot only" in str(checked.notes[0])
    _pin(w, None, next_boot=True)
    _pin(w, "9.9.9-gone")
    assert w.backend.boot_state(w.refs()).pins == (KernelPin("pve-1", "9.9.9-gone", False,
                                                             False),)
    assert "not in the BE's /boot" in str(w.backend.check(w.refs()).notes[0])
    _pin(w, None)
    assert w.backend.check(w.refs()).notes == ()
