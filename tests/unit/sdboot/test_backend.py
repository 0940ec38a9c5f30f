"""SystemdBootBackend against a directory-made Proxmox machine (sdboot_world)."""

from __future__ import annotations

from pathlib import Path

import pytest

from beadm.errors import BootError
from beadm.esp import hooks
from beadm.esp.efivars import EfiRefused, EfiVars
from worlds.fakes import pool_props
from worlds.sdboot import K1, K2, UUIDS, World, tree_snapshot


@pytest.fixture
def w(sdboot_world: World) -> World:
    return sdboot_world


def inited(w: World) -> World:
    w.backend.init(w.ref("pve-1"))
    return w


def with_pve2(w: World) -> World:
    inited(w)
    w.add_be("pve-2", clone_of="pve-1")
    w.backend.post_create(w.ref("pve-2", desc="before upgrade"))
    return w


def old_port_layout(w: World, bes: tuple[str, ...], kvers: tuple[str, ...],
                    default: str) -> None:
    """What the old shell port left on every ESP: env/<be>/ copies, <be>-<kver>.conf
    entries and loader.conf's ``default <default>``."""
    for u in UUIDS:
        esp = w.esps[u]
        for be in bes:
            (esp / "env" / be).mkdir(parents=True)
            for k in kvers:
                (esp / "env" / be / f"vmlinuz-{k}").write_bytes(b"old copy")
                (esp / "env" / be / f"initrd.img-{k}").write_bytes(b"old copy")
                (esp / f"loader/entries/{be}-{k}.conf").write_text(
                    f"title {be}\noptions root=ZFS=rpool/ROOT/{be} boot=zfs\n"
                    f"linux /env/{be}/vmlinuz-{k}\ninitrd /env/{be}/initrd.img-{k}\n")
        (esp / "loader/loader.conf").write_text(f"timeout 3\ndefault {default}\n")


class Refusing(EfiVars):
    """Firmware that refuses every EFI variable write (Dell and others)."""

    def set(self, name: str, value: str) -> None:
        raise EfiRefused(5, "Input/output error")

    def delete(self, name: str) -> None:
        raise EfiRefused(5, "Input/output error")


def test_fresh_machine_boots_pve1_and_init_keeps_it(w: World) -> None:
    assert all(w.booted(u) == "pve-1" for u in UUIDS)
    inited(w)
    for u in UUIDS:
        assert w.booted(u) == "pve-1"
        assert w.entries(u) == [f"beadm-pve-1-{K1}.conf", f"beadm-pve-1-{K2}.conf"]
        assert len(w.files(u)) == 4
    root = w.bes["rpool/ROOT/pve-1"]
    for rel in hooks.TARGETS:
        assert (root / rel / "zzz-beadm").read_text() == hooks.SCRIPT
    text = (w.esps[UUIDS[0]] / f"loader/entries/beadm-pve-1-{K2}.conf").read_text()
    assert f"title pve-1 ({K2})" in text
    assert "options root=ZFS=rpool/ROOT/pve-1 boot=zfs quiet" in text
    assert "linux /beadm/" in text and "EFI/proxmox" not in text


def test_create_writes_its_own_cmdline_and_shares_files(w: World) -> None:
    with_pve2(w)
    assert (w.bes["rpool/ROOT/pve-2"] / "etc/kernel/cmdline").read_text() == (
        "root=ZFS=rpool/ROOT/pve-2 boot=zfs quiet\n")
    assert (w.bes["rpool/ROOT/pve-1"] / "etc/kernel/cmdline").read_text().startswith(
        "root=ZFS=rpool/ROOT/pve-1 ")
    for u in UUIDS:
        assert len(w.files(u)) == 4  # shared by content
        assert len(w.entries(u)) == 4
        assert w.booted(u) == "pve-1"  # created, not active
    text = (w.esps[UUIDS[1]] / f"loader/entries/beadm-pve-2-{K2}.conf").read_text()
    assert f"title pve-2 - before upgrade ({K2})" in text


def test_activate_sets_efi_default_loader_conf_and_record(w: World) -> None:
    with_pve2(w)
    w.backend.activate(w.ref("pve-2"), temporary=False)
    target = f"beadm-pve-2-{K2}.conf"
    assert w.efi("LoaderEntryDefault") == target
    for u in UUIDS:
        assert (w.esps[u] / "loader/loader.conf").read_text() == f"timeout 3\ndefault {target}\n"
        assert w.booted(u) == "pve-2"
    assert w.runner.props[("rpool/ROOT", "org.beadm:next")] == "pve-2"
    before = w.host.esp_mounts
    state = w.backend.boot_state(w.refs())
    assert (state.next_boot, state.once, state.warnings) == ("pve-2", None, ())
    assert w.host.esp_mounts == before  # answered from EFI variables, no ESP mounted


def test_activate_sets_the_record_with_one_zfs_command(w: World) -> None:
    """Issue 15: activate's ZFS part is the record, set without asking first."""
    with_pve2(w)
    w.runner.calls.clear()
    w.backend.activate(w.ref("pve-2"), temporary=False)
    zfs = [c for c in w.runner.calls if c[0] in ("zfs", "zpool")]
    assert zfs == [("zfs", "set", "org.beadm:next=pve-2", "rpool/ROOT")]
    w.backend.activate(w.ref("pve-2"), temporary=False)  # again: the same, harmless
    assert w.runner.props[("rpool/ROOT", "org.beadm:next")] == "pve-2"


def test_activate_survives_refresh_and_reinit(w: World) -> None:
    with_pve2(w)
    w.backend.activate(w.ref("pve-2"), temporary=False)
    for u in UUIDS:
        w.pbt_refresh_entries("pve-1")
        w.pbt_reinit(w.esps[u])
        assert w.booted(u) == "pve-2"  # the EFI variable outranks loader.conf
    w.backend.sync(w.refs())  # what zzz-beadm runs after Proxmox's hooks
    for u in UUIDS:
        assert "default beadm-pve-2-" in (w.esps[u] / "loader/loader.conf").read_text()
    assert w.backend.check(w.refs()).problems == ()


def test_refused_efi_loader_conf_alone_and_list_warns(w: World) -> None:
    with_pve2(w)
    w.host.efivars = Refusing(w.efivars)
    warned = w.backend.activate(w.ref("pve-2"), temporary=False)
    assert w.efi("LoaderEntryDefault") is None
    assert any("not written" in m for m in warned)
    assert all(w.booted(u) == "pve-2" for u in UUIDS)
    assert w.backend.boot_state(w.refs()).next_boot == "pve-2"
    for u in UUIDS:
        w.pbt_refresh(w.esps[u])
    state = w.backend.boot_state(w.refs())
    assert state.next_boot == "pve-1"  # the real state, not beadm's record
    assert any("overwritten" in m and "pve-2" in m for m in state.warnings)
    assert any("loader.conf default" in p for p in w.backend.check(w.refs()).problems)
    w.backend.sync(w.refs())
    assert all(w.booted(u) == "pve-2" for u in UUIDS)
    assert w.backend.boot_state(w.refs()).warnings == ()


def test_refused_efi_with_stale_default_is_an_error(w: World) -> None:
    with_pve2(w)
    EfiVars(w.efivars).set("LoaderEntryDefault", f"beadm-pve-1-{K2}.conf")
    w.host.efivars = Refusing(w.efivars)
    with pytest.raises(BootError, match=r"outranks loader\.conf"):
        w.backend.activate(w.ref("pve-2"), temporary=False)


def test_activate_temporary_uses_oneshot_only(w: World) -> None:
    with_pve2(w)
    w.backend.activate(w.ref("pve-2"), temporary=True)
    assert w.efi("LoaderEntryOneShot") == f"beadm-pve-2-{K2}.conf"
    assert w.efi("LoaderEntryDefault") is None
    assert all("proxmox-*" in (w.esps[u] / "loader/loader.conf").read_text() for u in UUIDS)
    assert w.booted(UUIDS[0]) == "pve-2"
    state = w.backend.boot_state(w.refs())
    assert (state.next_boot, state.once) == ("pve-1", "pve-2")
    # the loader deletes the one-shot variable when it reads it:
    EfiVars(w.efivars).delete("LoaderEntryOneShot")
    assert w.booted(UUIDS[0]) == "pve-1"
    # a permanent activate cancels a pending once
    w.backend.activate(w.ref("pve-2"), temporary=True)
    w.backend.activate(w.ref("pve-1"), temporary=False)
    assert w.efi("LoaderEntryOneShot") is None


def test_activate_temporary_refused_fails_clearly(w: World) -> None:
    with_pve2(w)
    w.host.efivars = Refusing(w.efivars)
    with pytest.raises(BootError, match="activate -t needs"):
        w.backend.activate(w.ref("pve-2"), temporary=True)
    assert all(w.booted(u) == "pve-1" for u in UUIDS)


def test_rename_moves_entries_cmdline_and_defaults(w: World) -> None:
    with_pve2(w)
    w.backend.activate(w.ref("pve-2"), temporary=False)
    w.rename_be("pve-2", "Next")
    w.backend.post_rename(w.ref("pve-2"), w.ref("Next"))
    assert (w.bes["rpool/ROOT/Next"] / "etc/kernel/cmdline").read_text().startswith(
        "root=ZFS=rpool/ROOT/Next ")
    for u in UUIDS:
        assert not [e for e in w.entries(u) if "pve-2" in e]
        assert f"beadm-next-{K2}.conf" in w.entries(u)
        assert w.booted(u) == "Next"
        assert len(w.files(u)) == 4
    assert w.runner.props[("rpool/ROOT", "org.beadm:next")] == "Next"
    assert w.backend.boot_state(w.refs()).next_boot == "Next"
    assert w.backend.check(w.refs()).problems == ()


def test_case_only_collision_is_refused(w: World) -> None:
    with_pve2(w)
    w.add_be("PVE-2", clone_of="pve-1")
    with pytest.raises(BootError, match="differ only in case"):
        w.backend.post_create(w.ref("PVE-2"))


def test_destroy_frees_unshared_files_only(w: World) -> None:
    with_pve2(w)
    w.add_be("new", {"6.9.1-1-pve": b"newer"}, clone_of="pve-2")
    w.backend.post_create(w.ref("new"))
    for u in UUIDS:
        assert len(w.files(u)) == 6  # 6.9.1 + K2 newest two: K2 files shared
    w.backend.activate(w.ref("new"), temporary=False)
    w.backend.activate(w.ref("pve-1"), temporary=False)
    del w.bes["rpool/ROOT/new"]
    w.backend.post_destroy(w.ref("new"))
    for u in UUIDS:
        assert len(w.files(u)) == 4
        assert not [e for e in w.entries(u) if "-new-" in e]
        assert w.booted(u) == "pve-1"
    w.backend.post_destroy(w.ref("pve-2"))
    del w.bes["rpool/ROOT/pve-2"]
    for u in UUIDS:
        assert len(w.files(u)) == 4  # still pve-1's


def test_missing_esp_is_named_others_stay_consistent(w: World) -> None:
    inited(w)
    w.add_be("pve-2", clone_of="pve-1")
    w.host.esp_dirs.pop(UUIDS[1])
    warned = w.backend.post_create(w.ref("pve-2"))  # a degraded host: a warning, not an error
    assert [m for m in warned if f"ESP {UUIDS[1]} is missing" in m]
    assert len(w.entries(UUIDS[0])) == 4
    w.host.esp_dirs[UUIDS[1]] = w.esps[UUIDS[1]]
    problems = w.backend.check(w.refs()).problems
    assert problems and all(UUIDS[1] in p for p in problems)
    w.backend.sync(w.refs())
    assert w.backend.check(w.refs()).problems == ()


def test_degraded_host_create_activate_destroy_work_and_sync_completes(w: World) -> None:
    """Issue 10.12: one ESP's disk gone. Every command works on the ESPs present and warns,
    naming the missing one; check reports it; sync completes it when it is back."""
    with_pve2(w)
    w.host.esp_dirs.pop(UUIDS[0])
    w.add_be("pve-3", clone_of="pve-2")
    w.backend.post_create(w.ref("pve-3"))
    warned = w.backend.activate(w.ref("pve-3"), temporary=False)
    assert len(warned) == 1
    assert f"ESP {UUIDS[0]} is missing" in warned[0]
    assert "beadm sync" in warned[0]
    assert w.booted(UUIDS[1]) == "pve-3"
    assert w.efi("LoaderEntryDefault") == f"beadm-pve-3-{K2}.conf"
    assert w.runner.props[("rpool/ROOT", "org.beadm:next")] == "pve-3"
    del w.bes["rpool/ROOT/pve-2"]
    warned = w.backend.post_destroy(w.ref("pve-2"))
    assert warned and not [e for e in w.entries(UUIDS[1]) if "pve-2" in e]
    state = w.backend.boot_state(w.refs())
    assert state.next_boot == "pve-3"
    assert any(f"ESP {UUIDS[0]} is missing" in p for p in w.backend.check(w.refs()).problems)
    # the disk comes back with what it had: sync brings it up to date
    w.host.esp_dirs[UUIDS[0]] = w.esps[UUIDS[0]]
    assert w.backend.check(w.refs()).problems
    assert w.backend.sync(w.refs()) == ()
    assert w.backend.check(w.refs()).problems == ()
    assert all(w.booted(u) == "pve-3" for u in UUIDS)
    assert w.entries(UUIDS[0]) == w.entries(UUIDS[1])


def test_no_esp_present_is_an_error(w: World) -> None:
    with_pve2(w)
    w.host.esp_dirs.clear()
    with pytest.raises(BootError, match="no ESP of the list is present"):
        w.backend.activate(w.ref("pve-2"), temporary=False)
    assert w.efi("LoaderEntryDefault") is None
    assert ("rpool/ROOT", "org.beadm:next") not in w.runner.props


def test_activate_with_a_broken_present_esp_changes_no_default(w: World) -> None:
    """A present ESP that cannot take the entries (full, unwritable) is an error, and then
    no default changes anywhere: what boots next stays what booted before, on every ESP."""
    with_pve2(w)
    for u in UUIDS:  # pve-2's entries are gone; ESP 2 cannot store files any more
        for e in w.entries(u):
            if "pve-2" in e:
                (w.esps[u] / "loader/entries" / e).unlink()
    import shutil

    shutil.rmtree(w.esps[UUIDS[1]] / "beadm")
    (w.esps[UUIDS[1]] / "beadm").write_text("not a directory")
    with pytest.raises(BootError, match=f"ESP {UUIDS[1]}"):
        w.backend.activate(w.ref("pve-2"), temporary=False)
    assert w.efi("LoaderEntryDefault") is None
    assert all("default proxmox-*" in (w.esps[u] / "loader/loader.conf").read_text()
               for u in UUIDS)
    assert all(w.booted(u) == "pve-1" for u in UUIDS)
    assert ("rpool/ROOT", "org.beadm:next") not in w.runner.props


def test_wiped_esp_reported_and_restored_by_sync(w: World) -> None:
    with_pve2(w)
    w.backend.activate(w.ref("pve-2"), temporary=False)
    import shutil

    shutil.rmtree(w.esps[UUIDS[1]])
    w.esps[UUIDS[1]].mkdir(parents=True)
    w.pbt_install(w.esps[UUIDS[1]])
    problems = w.backend.check(w.refs()).problems
    assert problems and all(UUIDS[1] in p for p in problems)
    w.backend.sync(w.refs())
    assert w.backend.check(w.refs()).problems == ()
    assert w.booted(UUIDS[1]) == "pve-2"
    assert w.files(UUIDS[0]) == w.files(UUIDS[1])


def test_sync_adds_new_kernel_and_drops_removed_and_stale(w: World) -> None:
    with_pve2(w)
    w.backend.activate(w.ref("pve-2"), temporary=False)
    root = w.bes["rpool/ROOT/pve-2"]
    (root / "boot/vmlinuz-6.9.0-1-pve").write_bytes(b"v9")
    (root / "boot/initrd.img-6.9.0-1-pve").write_bytes(b"i9")
    w.backend.sync(w.refs())
    assert w.efi("LoaderEntryDefault") == "beadm-pve-2-6.9.0-1-pve.conf"
    for u in UUIDS:
        names = w.entries(u)
        assert "beadm-pve-2-6.9.0-1-pve.conf" in names
        assert f"beadm-pve-2-{K1}.conf" not in names  # only the two newest
        assert w.booted(u) == "pve-2"
    (w.esps[UUIDS[0]] / "loader/entries/beadm-gone-1.0.conf").write_text(
        "# beadm-be gone\ntitle x\nlinux /beadm/x\n")
    assert any("belongs to no BE" in p for p in w.backend.check(w.refs()).problems)
    w.backend.sync(w.refs())
    assert w.backend.check(w.refs()).problems == ()


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    w = World(tmp_path, dry_run=True)
    w.add_be("pve-2", clone_of="pve-1")
    before = tree_snapshot(tmp_path)
    w.backend.init(w.ref("pve-1"))
    w.backend.post_create(w.ref("pve-2"))
    w.backend.activate(w.ref("pve-2"), temporary=False)
    w.backend.sync(w.refs())
    assert tree_snapshot(tmp_path) == before
    out = w.out.getvalue()
    assert "would copy" in out and "would write" in out and "would set EFI variable" in out
    assert ("zfs", "set", "org.beadm:next=pve-2", "rpool/ROOT") in w.runner.calls


def test_be_without_kernels_is_an_error(w: World) -> None:
    inited(w)
    w.add_be("empty")
    with pytest.raises(BootError, match="BE empty has no kernel"):
        w.backend.post_create(w.ref("empty"))


def test_migrate_old_shell_layout(w: World) -> None:
    w.add_be("pve-2", clone_of="pve-1")
    (w.bes["rpool/ROOT/pve-2"] / "etc/kernel/cmdline").write_text(
        "root=ZFS=rpool/ROOT/pve-2 boot=zfs\n")
    old_port_layout(w, ("pve-1", "pve-2"), (K1, K2), "pve-2-*")
    assert all(w.booted(u) == "pve-2" for u in UUIDS)
    assert any("old shell beadm layout" in p for p in w.backend.check(w.refs()).problems)
    w.backend.migrate(w.refs())
    for u in UUIDS:
        assert not (w.esps[u] / "env").exists() or not list((w.esps[u] / "env").iterdir())
        assert len(w.files(u)) == 4
        assert w.booted(u) == "pve-2"
        assert not [p for p in (w.esps[u] / "loader/entries").iterdir()
                    if p.name.startswith("pve-")]
    assert w.runner.props[("rpool/ROOT", "org.beadm:next")] == "pve-2"
    assert w.backend.check(w.refs()).problems == ()


def test_names_are_literals_destroying_test_leaves_test_2(w: World) -> None:
    inited(w)
    for name in ("test", "test-2"):
        w.add_be(name, clone_of="pve-1")
        w.backend.post_create(w.ref(name))
    w.backend.activate(w.ref("test-2"), temporary=False)
    w.backend.activate(w.ref("test-2"), temporary=True)
    import shutil

    shutil.rmtree(w.bes.pop("rpool/ROOT/test"))
    w.backend.post_destroy(w.ref("test"))
    assert w.efi("LoaderEntryDefault") == f"beadm-test-2-{K2}.conf"
    assert w.efi("LoaderEntryOneShot") == f"beadm-test-2-{K2}.conf"
    for u in UUIDS:
        assert len([e for e in w.entries(u) if e.startswith("beadm-test-2-")]) == 2
        assert not [e for e in w.entries(u) if e.startswith(f"beadm-test-{K1[0]}")]
        assert "default beadm-test-2-" in (w.esps[u] / "loader/loader.conf").read_text()
    w.add_be("test", clone_of="pve-1")  # a new "test" (the dataset was destroyed)
    w.backend.post_create(w.ref("test"))
    w.rename_be("test", "other")
    w.backend.post_rename(w.ref("test"), w.ref("other"))
    assert w.efi("LoaderEntryDefault") == f"beadm-test-2-{K2}.conf"
    assert w.backend.boot_state(w.refs()).next_boot == "test-2"
    assert w.backend.check(w.refs()).problems == ()


def test_hook_sync_before_init_changes_no_esp(w: World) -> None:
    """zzz-beadm runs ``sync --if-used`` on every kernel or initramfs update, also on a host
    where beadm is installed but nobody ran ``init``: then no ESP may change."""
    before = {u: tree_snapshot(w.esps[u]) for u in UUIDS}
    w.backend.sync(w.refs(), only_if_used=True)
    assert {u: tree_snapshot(w.esps[u]) for u in UUIDS} == before
    w.backend.sync(w.refs())  # the admin's own sync does its job
    assert all(w.entries(u) for u in UUIDS)


def test_hook_sync_after_init_picks_up_a_new_kernel(w: World) -> None:
    inited(w)
    k3 = "6.8.12-3-pve"
    root = w.bes_by_name()["pve-1"]
    (root / "boot" / f"vmlinuz-{k3}").write_bytes(b"vmlinuz kernel-3")
    (root / "boot" / f"initrd.img-{k3}").write_bytes(b"initrd kernel-3")
    w.backend.sync(w.refs(), only_if_used=True)
    for u in UUIDS:
        assert f"beadm-pve-1-{k3}.conf" in w.entries(u)


def test_case_variant_names_t_and_r_shown_on_the_owner(w: World) -> None:
    """Issue 10.11: the one-shot entry of ``pve-2`` is ``pve-2``'s, not ``Pve-2``'s (a BE
    made with zfs, or while pve-2 had no entries); and the entry's tag decides when the
    mixed-case BE is the one that owns the entries."""
    with_pve2(w)
    w.backend.activate(w.ref("pve-2"), temporary=True)
    w.add_be("Pve-2", clone_of="pve-1")  # exists in ZFS, has no entries of its own
    state = w.backend.boot_state(w.refs())
    assert (state.next_boot, state.once) == ("pve-1", "pve-2")
    w.backend.activate(w.ref("pve-2"), temporary=False)
    assert w.backend.boot_state(w.refs()).next_boot == "pve-2"


def test_case_variant_tag_decides_when_mixed_case_owns_the_entries(w: World) -> None:
    inited(w)
    w.add_be("Pve-2", clone_of="pve-1")
    w.backend.post_create(w.ref("Pve-2"))
    w.backend.activate(w.ref("Pve-2"), temporary=True)
    w.add_be("pve-2", clone_of="pve-1")  # no entries: they would collide with Pve-2's
    assert w.backend.boot_state(w.refs()).once == "Pve-2"
    w.backend.activate(w.ref("Pve-2"), temporary=False)
    assert w.backend.boot_state(w.refs()).next_boot == "Pve-2"


def test_migrate_old_default_glob_follows_the_loader_not_name_order(w: World) -> None:
    """The old port wrote ``default test-*`` for BE ``test``; the loader boots the first
    matching id in its (descending) order, ``test-6.8...``: migrate must move the default
    to ``test``, not to ``test-2`` whose entries the glob matches too."""
    for be in ("test", "test-2"):
        w.add_be(be, clone_of="pve-1")
        (w.bes[f"rpool/ROOT/{be}"] / "etc/kernel/cmdline").write_text(
            f"root=ZFS=rpool/ROOT/{be} boot=zfs\n")
    old_port_layout(w, ("test", "test-2"), (K1,), "test-*")
    assert all(w.booted(u) == "test" for u in UUIDS)
    w.backend.migrate(w.refs())
    assert all(w.booted(u) == "test" for u in UUIDS)
    assert w.runner.props[("rpool/ROOT", "org.beadm:next")] == "test"


def test_sync_repairs_cmdline_drift_check_reports(w: World) -> None:
    """Issue 10.6: a BE's /etc/kernel/cmdline edited (wrong root=, no boot=zfs, a new
    option): check reports it, sync rewrites the file and the BE's entries on every ESP."""
    with_pve2(w)
    path = w.bes["rpool/ROOT/pve-2"] / "etc/kernel/cmdline"
    path.write_text("root=ZFS=rpool/ROOT/pve-1 quiet mitigations=off\nsecond line\n")
    problems = w.backend.check(w.refs()).problems
    assert any("pve-2: /etc/kernel/cmdline" in p for p in problems)
    w.backend.sync(w.refs())
    want = "root=ZFS=rpool/ROOT/pve-2 quiet mitigations=off boot=zfs"
    assert path.read_text() == f"{want}\nsecond line\n"
    for u in UUIDS:
        for k in (K1, K2):
            text = (w.esps[u] / f"loader/entries/beadm-pve-2-{k}.conf").read_text()
            assert f"options {want}\n" in text
    assert w.backend.check(w.refs()).problems == ()


def _dry_cli(w: World, *argv: str) -> tuple[int, str, str]:
    """``beadm -n ...`` through the CLI, the systemd-boot backend on the world's ESPs."""
    import io

    from beadm.cli import Deps, main
    from beadm.esp.dirhost import DirHost
    from beadm.sdboot.backend import SystemdBootBackend
    from worlds.fakes import FakeRunner
    from worlds.pool import (
        GET_TEXT,
        LIST_ARGV,
        LIST_FS_ARGV,
        LIST_TEXT,
        MOUNTINFO,
        without_snapshots,
    )

    out, err = io.StringIO(), io.StringIO()

    def make_runner(dry: bool, _out: object = None) -> FakeRunner:
        assert dry
        r = FakeRunner(dry_run=True)
        r.out = out
        r.on(*LIST_ARGV, stdout=LIST_TEXT)
        r.on(*LIST_FS_ARGV, stdout=without_snapshots(LIST_TEXT))
        r.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-1"))
        r.on("zfs", "get", "-H", "-p", "-o", "name,property,value,source", stdout=GET_TEXT)
        r.on("zfs", "get", "-H", "-p", "-o", "value", stdout="-\n")
        r.on("zfs", "list", "-H", "-o", "name", "rpool/ROOT/pve-3", returncode=1,
             stderr="dataset does not exist")
        return r

    def make_backend(name: str, runner: object) -> SystemdBootBackend:
        host = DirHost(w.etc, dict(w.esps), w.bes, w.efivars, dry_run=True, out=out,
                       kernel=K1, cmdline="root=ZFS=rpool/ROOT/pve-1 boot=zfs")
        return SystemdBootBackend(runner, host=host, out=out)  # type: ignore[arg-type]

    mi = w.tmp / "mountinfo"
    mi.write_text(MOUNTINFO)
    deps = Deps(make_runner=make_runner, make_backend=make_backend,  # type: ignore[arg-type]
                mountinfo=mi, running_root=w.tmp / "running",  # not this machine's /etc
                lock_path=w.tmp / "lock", lock_wait=0.2, euid=lambda: 0,
                stdin=io.StringIO(), stdout=out, stderr=err)
    rc = main(["-n", *argv], deps=deps)
    return rc, out.getvalue(), err.getvalue()


def test_dry_run_create_activate_destroy_through_the_cli(w: World) -> None:
    """Issue 10.5: ``-n create`` used to mount the dataset it did not create (exit 9) and
    print a rollback; every dry run must exit 0, print what would run and change nothing."""
    with_pve2(w)
    dirs = ("esp", "be", "efivars", "etc-kernel")
    before = [tree_snapshot(w.tmp / d) for d in dirs]
    rc, out, err = _dry_cli(w, "create", "pve-3")
    assert (rc, err) == (0, "")
    assert "would run: zfs clone" in out
    assert "would write rpool/ROOT/pve-3's /etc/kernel/cmdline" in out
    assert "destroy" not in out and "undo" not in out
    rc, out, err = _dry_cli(w, "activate", "pve-2")
    assert (rc, err) == (0, "")
    assert "would run: zpool set bootfs=rpool/ROOT/pve-2 rpool" in out
    assert f"would set EFI variable LoaderEntryDefault=beadm-pve-2-{K2}.conf" in out
    assert "would set 'default beadm-pve-2-" in out
    rc, out, err = _dry_cli(w, "destroy", "pve-2")
    assert (rc, err) == (0, "")
    assert "would run: zfs destroy -r rpool/ROOT/pve-2" in out
    assert f"would remove ESP {UUIDS[0]}:/loader/entries/beadm-pve-2-{K1}.conf" in out
    assert [tree_snapshot(w.tmp / d) for d in dirs] == before


def test_dry_run_of_a_create_that_fails_prints_no_rollback(tmp_path: Path) -> None:
    """A dry run that stops on an error did nothing: it must not print undo commands as if
    they were planned (``would run: zfs destroy`` of the clone it never made)."""
    from worlds.fakes import FakeRunner, RecordingBackend
    from worlds.pool import manager

    mgr, runner, _ = manager(tmp_path, runner=FakeRunner(dry_run=True),
                             backend=RecordingBackend(fail_on="post_create"))
    with pytest.raises(BootError):
        mgr.create("pve-9")
    out = runner.out.getvalue()
    assert "would run: zfs clone" in out
    assert "destroy" not in out


def test_dry_run_rename_and_create_do_not_read_the_dataset_they_did_not_make(
        tmp_path: Path) -> None:
    """Dry runs of create and rename: the new dataset does not exist (the zfs commands were
    only printed), so the backend says what it would do instead of mounting it."""
    w = World(tmp_path, dry_run=True)
    w.runner.missing = {"rpool/ROOT/pve-2", "rpool/ROOT/new"}
    before = tree_snapshot(tmp_path)
    w.backend.post_create(w.ref("pve-2"))
    w.backend.post_rename(w.ref("pve-1"), w.ref("new"))
    assert tree_snapshot(tmp_path) == before
    out = w.out.getvalue()
    assert "would write rpool/ROOT/pve-2's /etc/kernel/cmdline" in out
    assert "would move every default naming BE pve-1 to BE new" in out
    assert w.host.esp_mounts == 0
