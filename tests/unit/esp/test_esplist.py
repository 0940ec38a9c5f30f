"""Issue 11.7: every BE knows the current ESPs. The ESP list is a file in each root's own
/etc/kernel; after a disk replacement (``proxmox-boot-tool init`` + ``clean`` in the running
BE) only the running BE's copy names the new ESP. create, activate (also -t) and sync carry
the running root's list into the target BE; check reports a BE whose list differs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from beadm import confined
from beadm.errors import BootError
from beadm.esp import esplist
from worlds.sdboot import UUIDS, World, tree_snapshot

NEW = "BBBB-0003"
CURRENT = f"{UUIDS[0]}\n{NEW}\n"
OLD = "".join(f"{u}\n" for u in UUIDS)


@pytest.fixture
def w(sdboot_world: World) -> World:
    w = sdboot_world
    w.backend.init(w.ref("pve-1"))
    w.add_be("pve-2", clone_of="pve-1")
    w.backend.post_create(w.ref("pve-2"))
    w.backend.activate(w.ref("pve-1"), temporary=False)
    return w


def replace_esp2(w: World) -> None:
    """In the running BE: ESP 2's disk replaced by a new one (volume id NEW), then
    ``proxmox-boot-tool init`` on it and ``clean``: only the running root's list changes."""
    old = w.esps.pop(UUIDS[1])
    w.host.esp_dirs.pop(UUIDS[1])
    esp = old.with_name(NEW)
    w.esps[NEW] = w.host.esp_dirs[NEW] = esp
    w.pbt_install(esp)
    (w.etc / "proxmox-boot-uuids").write_text(CURRENT)
    (w.bes["rpool/ROOT/pve-1"] / "etc/kernel/proxmox-boot-uuids").write_text(CURRENT)


def be_list(w: World, be: str, name: str = "proxmox-boot-uuids") -> Path:
    return w.bes[f"rpool/ROOT/{be}"] / "etc/kernel" / name


@pytest.mark.parametrize("temporary", [False, True])
def test_activate_carries_the_running_list_into_a_be_cloned_before_the_replacement(
        w: World, temporary: bool) -> None:
    replace_esp2(w)
    be_list(w, "pve-2").chmod(0o640)
    problems = w.backend.check(w.refs()).problems
    assert (f"BE pve-2: /etc/kernel/proxmox-boot-uuids lists {UUIDS[0]}, {UUIDS[1]}, the "
            f"running BE's lists {UUIDS[0]}, {NEW}") in problems
    w.backend.activate(w.ref("pve-2"), temporary=temporary)
    assert be_list(w, "pve-2").read_text() == CURRENT
    assert stat.S_IMODE(be_list(w, "pve-2").stat().st_mode) == 0o640
    assert not list(be_list(w, "pve-2").parent.glob(".*beadm-tmp"))
    assert w.entries(NEW)  # the new ESP got pve-2's entries
    assert not [p for p in w.backend.check(w.refs()).problems if "pve-2" in p and "lists" in p]


def test_create_from_an_old_snapshot_gets_the_current_list(w: World) -> None:
    """``create -e BE@snap``: the clone of a snapshot taken before the replacement."""
    replace_esp2(w)
    root = w.add_be("pve-3", clone_of="pve-2")  # pve-2's tree: the old list, like the snap
    assert (root / "etc/kernel/proxmox-boot-uuids").read_text() == OLD
    w.backend.post_create(w.ref("pve-3"))
    assert (root / "etc/kernel/proxmox-boot-uuids").read_text() == CURRENT


def test_check_reports_every_stale_be_and_sync_repairs_them(w: World) -> None:
    replace_esp2(w)
    w.add_be("pve-3", clone_of="pve-2")
    w.backend.post_create(w.ref("pve-3"))
    be_list(w, "pve-3").write_text(OLD)  # e.g. edited back by hand
    problems = w.backend.check(w.refs()).problems
    stale = [p for p in problems if "the running BE's lists" in p]
    assert [p.split(":")[0] for p in stale] == ["BE pve-2", "BE pve-3"]
    w.backend.sync(w.refs())
    assert be_list(w, "pve-2").read_text() == be_list(w, "pve-3").read_text() == CURRENT
    assert w.backend.check(w.refs()).problems == ()


def test_same_ids_in_another_order_or_with_comments_is_no_drift(w: World) -> None:
    be_list(w, "pve-2").write_text(f"# mine\n{UUIDS[1]}\n\n{UUIDS[0]}\n")
    before = be_list(w, "pve-2").read_text()
    assert w.backend.check(w.refs()).problems == ()
    w.backend.activate(w.ref("pve-2"), temporary=False)
    assert be_list(w, "pve-2").read_text() == before


def test_pre_6_4_name_in_the_be_is_rewritten_under_that_name(w: World) -> None:
    replace_esp2(w)
    be_list(w, "pve-2").rename(be_list(w, "pve-2", "pve-efiboot-uuids"))
    w.backend.activate(w.ref("pve-2"), temporary=False)
    assert be_list(w, "pve-2", "pve-efiboot-uuids").read_text() == CURRENT
    assert not be_list(w, "pve-2").exists()


def test_both_names_in_the_be_are_each_brought_up_to_date(w: World) -> None:
    replace_esp2(w)
    be_list(w, "pve-2", "pve-efiboot-uuids").write_text(OLD)
    assert len([p for p in w.backend.check(w.refs()).problems if p.startswith("BE pve-2: ")]) == 2
    w.backend.sync(w.refs())
    assert be_list(w, "pve-2").read_text() == CURRENT
    assert be_list(w, "pve-2", "pve-efiboot-uuids").read_text() == CURRENT


def test_running_root_with_the_old_name_and_a_be_without_a_list(w: World) -> None:
    (w.etc / "proxmox-boot-uuids").rename(w.etc / "pve-efiboot-uuids")
    (w.etc / "pve-efiboot-uuids").chmod(0o600)
    be_list(w, "pve-2").unlink()
    assert "BE pve-2: has no ESP list (the running BE's lists " \
        f"{UUIDS[0]}, {UUIDS[1]})" in w.backend.check(w.refs()).problems
    w.backend.activate(w.ref("pve-2"), temporary=False)
    path = be_list(w, "pve-2", "pve-efiboot-uuids")
    assert path.read_text() == OLD
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not be_list(w, "pve-2").exists()


def test_dry_run_says_it_and_changes_nothing(w: World) -> None:
    from beadm.esp.dirhost import DirHost
    from beadm.sdboot.backend import SystemdBootBackend
    from worlds.sdboot import K1, PropRunner

    replace_esp2(w)
    host = DirHost(w.etc, dict(w.esps), w.bes, w.efivars, dry_run=True, out=w.out, kernel=K1)
    backend = SystemdBootBackend(PropRunner(dry_run=True), host=host, out=w.out)
    before = tree_snapshot(w.tmp)
    backend.activate(w.ref("pve-2"), temporary=False)
    backend.sync(w.refs())
    assert tree_snapshot(w.tmp) == before
    line = f"would write {be_list(w, 'pve-2')}: ESPs {UUIDS[0]}, {NEW}"
    assert w.out.getvalue().count(line) == 2


def test_a_kill_at_any_point_of_the_write_leaves_the_old_or_the_new_list(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    class Killed(BaseException):
        pass

    replace_esp2(w)
    path = be_list(w, "pve-2")
    for fn in ("fsync", "replace"):
        def kill(*a: object, **k: object) -> None:
            raise Killed

        with monkeypatch.context() as m:
            m.setattr(confined.os, fn, kill)  # the write is beadm.confined's
            with pytest.raises(Killed):
                w.backend.activate(w.ref("pve-2"), temporary=False)
        assert path.read_text() == OLD
    w.backend.activate(w.ref("pve-2"), temporary=False)  # the next command finishes it
    assert path.read_text() == CURRENT


def test_an_unwritable_list_fails_activate_before_any_default_changes(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    replace_esp2(w)

    def refuse(root: Path, rel: str, want: esplist.EspList) -> None:
        raise PermissionError(13, "Permission denied", str(root / rel))

    monkeypatch.setattr(esplist, "write", refuse)
    efi_before = w.efi("LoaderEntryDefault")
    esps_before = tree_snapshot(w.tmp / "esp")
    with pytest.raises(BootError, match="BE pve-2: cannot write its ESP list"):
        w.backend.activate(w.ref("pve-2"), temporary=False)
    assert w.efi("LoaderEntryDefault") == efi_before
    assert tree_snapshot(w.tmp / "esp") == esps_before
    assert w.booted(UUIDS[0]) == "pve-1"


def test_a_list_naming_a_present_esp_the_running_list_lacks_is_left_alone(w: World) -> None:
    """The running list is the stale one (a sync in a BE not told about a new disk): it
    must not spread over a BE that knows a present ESP; check and a warning say so."""
    (w.etc / "proxmox-boot-uuids").write_text(f"{UUIDS[0]}\n")
    w.add_be("pve-3", clone_of="pve-2")
    be_list(w, "pve-3").write_text(f"{UUIDS[0]}\nGONE-0009\n")  # a gone one: replaced
    warned = w.backend.activate(w.ref("pve-2"), temporary=False)
    assert be_list(w, "pve-2").read_text() == OLD
    assert any(f"ESP {UUIDS[1]} is present but not in the running BE's list" in n
               for n in warned)
    problems = w.backend.check(w.refs()).problems
    assert any(p.startswith("BE pve-2: ") and f"ESP {UUIDS[1]} is present" in p
               for p in problems)
    w.backend.sync(w.refs())
    assert be_list(w, "pve-2").read_text() == OLD
    assert be_list(w, "pve-3").read_text() == f"{UUIDS[0]}\n"
