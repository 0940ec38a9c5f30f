"""The ESP's content store (beadm.esp.store): files shared by content, their names, a full ESP."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from beadm.errors import BootError
from beadm.esp import entries
from beadm.esp import store as store_mod
from beadm.esp.store import EspStore, content_name, file_digest, store_name


def test_store_dedups_by_content_and_gc_scans_entries(tmp_path: Path) -> None:
    esp, src = tmp_path / "esp", tmp_path / "src"
    esp.mkdir()
    src.mkdir()
    (src / "a").write_bytes(b"A" * 100)
    (src / "b").write_bytes(b"A" * 100)
    (src / "c").write_bytes(b"C")
    st_ = EspStore(esp, "X")
    pa = st_.put_file(src / "a", "vmlinuz-1")
    assert pa == st_.put_file(src / "b", "vmlinuz-1")
    pc = st_.put_file(src / "c", "initrd.img-1")
    assert pa.startswith("/beadm/") and len(st_.store_files()) == 2
    st_.write_entry("beadm-x-1.conf", entries.Entry(title="t", linux=pa))
    (esp / "beadm/.beadm-tmp-junk").write_text("half")
    removed = st_.gc()
    assert removed == [pc.lstrip("/"), "beadm/.beadm-tmp-junk"] or sorted(removed) == sorted(
        [pc.lstrip("/"), "beadm/.beadm-tmp-junk"])
    assert st_.store_files() == [pa.rsplit("/", 1)[1]]
    st_.remove_entry("beadm-x-1.conf")
    st_.gc()
    assert st_.store_files() == []


def test_content_name_takes_the_stored_name_of_equal_bytes_else_hashes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: a store file of the same basename and size whose bytes equal the source
    gives the name without hashing; same size with other bytes, another basename or no
    store: the sha256 name."""
    esp = tmp_path / "esp"
    (esp / "beadm").mkdir(parents=True)
    st_ = EspStore(esp, "1111-AAAA")
    kernel = tmp_path / "vmlinuz-6.1"
    kernel.write_bytes(b"K" * 3000 + b"end")
    hashed = store_name(file_digest(kernel), "vmlinuz-6.1")
    # a name no hash would give: proves the bytes decided, not the digest
    (esp / "beadm" / "0123456789abcdef-vmlinuz-6.1").write_bytes(b"K" * 3000 + b"end")
    (esp / "beadm" / "fedcba9876543210-vmlinuz-6.1").write_bytes(b"K" * 3000 + b"xxx")
    (esp / "beadm" / "00000000000000aa-initrd.img-6.1").write_bytes(b"K" * 3000 + b"end")
    hashes: list[Path] = []
    real = store_mod.file_digest
    monkeypatch.setattr(store_mod, "file_digest",
                        lambda p: hashes.append(p) or real(p))  # type: ignore[func-returns-value]
    monkeypatch.setattr(store_mod, "_name_cache", {})
    assert content_name(kernel, "vmlinuz-6.1", [st_]) == "0123456789abcdef-vmlinuz-6.1"
    assert hashes == []
    assert st_.put_file(kernel, "vmlinuz-6.1") == "/beadm/0123456789abcdef-vmlinuz-6.1"
    assert hashes == []

    other = tmp_path / "vmlinuz-6.2"
    other.write_bytes(b"K" * 3000 + b"end")  # same bytes, another basename: no match
    assert content_name(other, "vmlinuz-6.2", [st_]) == store_name(file_digest(other),
                                                                   "vmlinuz-6.2")
    changed = tmp_path / "k2" / "vmlinuz-6.1"
    changed.parent.mkdir()
    changed.write_bytes(b"K" * 3000 + b"yyy")  # same size, bytes of neither store file
    assert content_name(changed, "vmlinuz-6.1", [st_]) == store_name(
        real(changed), "vmlinuz-6.1")
    assert hashes == [other, changed]
    monkeypatch.setattr(store_mod, "_name_cache", {})
    assert content_name(kernel, "vmlinuz-6.1") == hashed  # no store: the hash


def test_store_full_esp_names_the_esp_and_leaves_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    esp = tmp_path / "esp"
    esp.mkdir()
    (tmp_path / "k").write_bytes(b"K" * 10)
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        if str(Path(f"/proc/self/fd/{fd}").readlink()).startswith(str(esp)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(BootError, match="ESP ABCD-0001 is full"):
        EspStore(esp, "ABCD-0001").put_file(tmp_path / "k", "vmlinuz-1")
    assert list((esp / "beadm").iterdir()) == []


def test_a_copy_to_the_esp_is_reported_as_progress_and_a_stored_file_is_not(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "vmlinuz"
    src.write_bytes(b"k" * (3 << 20))
    (tmp_path / "esp").mkdir()
    st = EspStore(tmp_path / "esp", "AAAA-0001")
    with caplog.at_level(logging.INFO, logger="beadm.progress"):
        st.put_file(src, "vmlinuz-6.8")
        st.put_file(src, "vmlinuz-6.8")  # stored already: nothing copied
    assert [r.getMessage() for r in caplog.records if r.name == "beadm.progress"] == [
        "copying vmlinuz-6.8 (3.0 MiB) to ESP AAAA-0001"]
