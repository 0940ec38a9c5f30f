"""systemd-boot backend building blocks: entries, loader.conf, cmdline, efivars, store."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beadm.errors import BootError
from beadm.esp import cmdline, entries, kernels, loaderconf
from beadm.esp import store as store_mod
from beadm.esp.efivars import EfiRefused, EfiVars, decode, encode
from beadm.esp.store import EspStore, content_name, file_digest, store_name
from beadm.sdboot import resolve
from worlds import REPO

NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)


def test_entry_filename_is_lowercase_id() -> None:
    assert entries.entry_filename("PVE-2", "6.8.12-1-pve") == "beadm-pve-2-6.8.12-1-pve.conf"


@given(be=NAME, kver=st.from_regex(r"[0-9][0-9a-z.+-]{0,15}", fullmatch=True),
       title=TEXT, options=TEXT)
def test_entry_render_parse_roundtrip(be: str, kver: str, title: str, options: str) -> None:
    e = entries.Entry(title=title, version=kver, options=options, linux="/beadm/a",
                      initrd=("/beadm/b",), be=be)
    assert entries.parse(e.render()) == e


def test_be_of_id_longest_name_wins_and_counters() -> None:
    names = ["test", "test-2", "Mixed"]
    assert entries.be_of_id("beadm-test-2-6.1.0-1-pve.conf", names) == "test-2"
    assert entries.be_of_id("beadm-test-6.1.0-1-pve.conf", names) == "test"
    assert entries.be_of_id("beadm-test-6.1.0-1-pve+1-2.conf", names) == "test"
    assert entries.be_of_id("beadm-mixed-6.1.conf", names) == "Mixed"
    assert entries.be_of_id("proxmox-6.1.conf", names) is None
    assert entries.be_of_id("beadm-other-6.1.conf", names) is None


def test_be_of_id_case_variants_and_prefixes() -> None:
    """Issue 10.11: ``Pve-2`` must not take the entries of ``pve-2``; ``pve`` never takes
    those of ``pve-2`` (its kernel version would have to be ``2-6.1.0-5-amd64``)."""
    eid = "beadm-pve-2-6.1.0-5-amd64.conf"
    assert entries.be_of_id(eid, ["Pve-2", "pve-2"]) == "pve-2"
    assert entries.be_of_id(eid, ["pve-2", "Pve-2"]) == "pve-2"
    assert entries.bes_of_id(eid, ["PVE-2", "Pve-2", "pve-2", "pve"]) == ["pve-2", "PVE-2",
                                                                         "Pve-2"]
    assert entries.be_of_id(eid, ["pve", "pve-2"]) == "pve-2"
    assert entries.be_of_id(eid, ["pve-2", "pve"]) == "pve-2"
    assert entries.be_of_id(eid, ["pve", "PVE-2"]) == "PVE-2"
    assert entries.be_of_id(eid, ["pve"]) == "pve"  # (a kernel "2-6.1.0-5-amd64")
    assert entries.be_of_id("beadm-pve-2-6.1.0-5-amd64+2-1.conf", ["Pve-2", "pve-2"]) == "pve-2"


def test_root_dataset_last_root_wins() -> None:
    e = entries.Entry(options="root=ZFS=rpool/ROOT/a boot=zfs root=ZFS=rpool/ROOT/b")
    assert e.root_dataset() == "rpool/ROOT/b"


def test_loaderconf_replaces_every_default_keeps_the_rest() -> None:
    text = "timeout 3\ndefault proxmox-*\nconsole-mode max\ndefault x\n"
    new = loaderconf.set_default(text, "beadm-pve-2-6.1.conf")
    assert new == "timeout 3\ndefault beadm-pve-2-6.1.conf\nconsole-mode max\n"
    assert loaderconf.get_default(new) == "beadm-pve-2-6.1.conf"
    assert loaderconf.get_default(text) == "x"
    assert loaderconf.set_default("timeout 3\n", "a") == "timeout 3\ndefault a\n"


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


def test_kernels_newest_two_plus_running(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    for k in ("6.2.16-3-pve", "6.8.12-10-pve", "6.8.12-9-pve", "6.5.1-1-pve"):
        (boot / f"vmlinuz-{k}").write_text("k")
        (boot / f"initrd.img-{k}").write_text("i")
    (boot / "vmlinuz-7.0-noinitrd").write_text("k")
    got = [k.kver for k in kernels.find(tmp_path, keep="6.2.16-3-pve")]
    assert got == ["6.8.12-10-pve", "6.8.12-9-pve", "6.2.16-3-pve"]


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


def test_hook_copy_in_repo_matches_installed_text() -> None:
    from beadm.esp import hooks

    repo_hook = REPO / "hooks" / hooks.NAME
    assert repo_hook.read_text() == hooks.SCRIPT
    assert os.access(repo_hook, os.X_OK)


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
