"""The rename path of the systemd-boot backend (issue 10 item 1): checked before any
change, and undone by post_rename with the names swapped."""

from __future__ import annotations

from pathlib import Path

import pytest

from beadm.errors import BootError
from beadm.esp import room
from worlds.sdboot import UUIDS, World, tree_snapshot


def _with_pve2(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.backend.init(w.ref("pve-1"))
    w.add_be("pve-2", clone_of="pve-1")
    w.backend.post_create(w.ref("pve-2"))
    w.backend.activate(w.ref("pve-2"), temporary=False)
    return w


def test_check_rename_refuses_a_full_esp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _with_pve2(tmp_path)
    full = w.esps[UUIDS[1]]
    real = room.free_space
    monkeypatch.setattr(room, "free_space",
                        lambda p: (0, 4096) if Path(p) == full else real(p))
    before = {u: tree_snapshot(e) for u, e in w.esps.items()}
    with pytest.raises(BootError, match=f"ESP {UUIDS[1]} has 0 bytes free"):
        w.backend.check_rename(w.ref("pve-2"), w.ref("stable"))
    assert {u: tree_snapshot(e) for u, e in w.esps.items()} == before


def test_check_rename_passes_with_room(tmp_path: Path) -> None:
    w = _with_pve2(tmp_path)
    w.backend.check_rename(w.ref("pve-2"), w.ref("stable"))  # raises if refused


def test_post_rename_swapped_undoes_a_rename(tmp_path: Path) -> None:
    """What BeManager.rename's undo calls after `zfs rename` back: the ESPs, the BE's
    cmdline, the EFI default and the record are as before the rename."""
    w = _with_pve2(tmp_path)
    esps = {u: tree_snapshot(e) for u, e in w.esps.items()}
    be = tree_snapshot(w.bes["rpool/ROOT/pve-2"])
    efi = [w.efi(v) for v in ("LoaderEntryDefault", "LoaderEntryOneShot")]
    props = dict(w.runner.props)
    w.rename_be("pve-2", "stable")
    w.backend.post_rename(w.ref("pve-2"), w.ref("stable"))
    assert all(w.booted(u) == "stable" for u in UUIDS)
    w.rename_be("stable", "pve-2")
    w.backend.post_rename(w.ref("stable"), w.ref("pve-2"))
    assert {u: tree_snapshot(e) for u, e in w.esps.items()} == esps
    assert tree_snapshot(w.bes["rpool/ROOT/pve-2"]) == be
    assert [w.efi(v) for v in ("LoaderEntryDefault", "LoaderEntryOneShot")] == efi
    assert w.runner.props == props
    assert all(w.booted(u) == "pve-2" for u in UUIDS)


def test_the_auto_backend_checks_renames_too(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``--backend auto`` wraps the backend (GRUB guard): its rename check still runs."""
    from beadm.detect import GuardedBackend

    w = _with_pve2(tmp_path)
    efi = tmp_path / "sys-firmware-efi"
    efi.mkdir()
    monkeypatch.setattr(room, "free_space", lambda p: (0, 4096))
    with pytest.raises(BootError, match="has 0 bytes free"):
        GuardedBackend(w.backend, efi_dir=efi).check_rename(w.ref("pve-2"), w.ref("stable"))
