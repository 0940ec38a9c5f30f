"""EFI variables (beadm.esp.efivars): the encoding, a directory as efivarfs, a dry run
without UEFI."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beadm.esp.efivars import EfiRefused, EfiVars, decode, encode


@given(value=st.text(st.characters(min_codepoint=32, max_codepoint=0xD7FF), max_size=40))
def test_efivar_encoding_roundtrip(value: str) -> None:
    raw = encode(value)
    assert raw[:4] == b"\x07\x00\x00\x00"
    assert decode(raw) == value


def test_efivars_on_a_directory(tmp_path: Path) -> None:
    efi = EfiVars(tmp_path)
    assert efi.get("LoaderEntryDefault") is None
    efi.set("LoaderEntryDefault", "beadm-a-1.conf")
    assert efi.get("LoaderEntryDefault") == "beadm-a-1.conf"
    f = tmp_path / "LoaderEntryDefault-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
    assert f.read_bytes() == encode("beadm-a-1.conf")
    efi.delete("LoaderEntryDefault")
    assert not f.exists()
    with pytest.raises(EfiRefused):
        EfiVars(tmp_path / "absent").set("LoaderEntryDefault", "x")


def test_efivars_dry_run_fails_like_the_real_run_without_uefi(tmp_path: Path) -> None:
    """A dry run of ``activate -t`` on a BIOS-booted host must not print a plan that the
    real run would refuse."""
    import io

    out = io.StringIO()
    with pytest.raises(EfiRefused):
        EfiVars(tmp_path / "none", dry_run=True, out=out).set("LoaderEntryOneShot", "x")
    assert out.getvalue() == ""
    EfiVars(tmp_path, dry_run=True, out=out).set("LoaderEntryOneShot", "x")
    assert out.getvalue() == "would set EFI variable LoaderEntryOneShot=x\n"
    assert list(tmp_path.iterdir()) == []
