from __future__ import annotations

from pathlib import Path

import pytest

from beadm import registry
from beadm.backend import NoopBackend
from beadm.errors import UsageError
from worlds.fakes import FakeRunner


def test_auto_without_uuids_is_none(tmp_path: Path) -> None:
    assert registry.auto_name(tmp_path) == "none"
    assert isinstance(registry.make_backend("auto", FakeRunner(), etc_kernel=tmp_path), NoopBackend)


@pytest.mark.parametrize("fname", ["proxmox-boot-uuids", "pve-efiboot-uuids"])
def test_auto_with_uuids(tmp_path: Path, fname: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / fname).write_text("1111-AAAA\n")
    monkeypatch.setattr(registry, "sdboot_available", lambda: True)
    assert registry.auto_name(tmp_path) == "systemd-boot"
    monkeypatch.setattr(registry, "sdboot_available", lambda: False)
    assert registry.auto_name(tmp_path) == "none"


def test_unknown_backend() -> None:
    with pytest.raises(UsageError):
        registry.make_backend("lilo", FakeRunner())


def test_grub_is_registered() -> None:
    from beadm.grub.backend import GrubBackend

    assert isinstance(registry.make_backend("grub", FakeRunner()), GrubBackend)
    assert registry.make_backend("grub", FakeRunner()).name == "grub"


def test_registry_is_fresh_each_call() -> None:
    a = registry.backends()
    a.pop("none")
    assert "none" in registry.backends()
