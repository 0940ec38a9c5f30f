"""beadm list (beadm.listing): the active flags from bootfs, the running root and the backend."""

from __future__ import annotations

from pathlib import Path

from beadm.backend import BootState
from worlds.fakes import RecordingBackend
from worlds.pool import manager


def test_listing_flags(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    lst = mgr.listing()
    assert [(i.be.name, i.active, i.mounted_at) for i in lst.bes] == [
        ("pve-1", "NR", "/"),
        ("pve-2", "-", None),
    ]
    assert lst.bes[1].be.description == "before upgrade"
    lists = [c for c in runner.calls if c[:2] == ("zfs", "list")]
    assert len(lists) == 1


def test_listing_backend_next_boot_and_once(tmp_path: Path) -> None:
    backend = RecordingBackend(state=BootState(next_boot="pve-2", once="pve-2"))
    mgr, _, _ = manager(tmp_path, backend=backend)
    assert [i.active for i in mgr.listing().bes] == ["N", "RT"]
