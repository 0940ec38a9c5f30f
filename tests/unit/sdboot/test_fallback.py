"""Issue 11.2: Proxmox's own proxmox-*.conf entries (the fallback after an NVRAM reset or a
reinit) carry the root= of the BE that refreshed last; once that BE is destroyed or renamed,
beadm runs the refresh from the running BE so that they boot an existing BE again, and puts
back the default lines the refresh reset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from beadm.errors import CommandError
from beadm.runner import Result
from worlds.sdboot import UUIDS, World

REFRESH = ("proxmox-boot-tool", "refresh")


def _refreshed_from(w: World, be: str) -> None:
    """proxmox-boot-tool refresh run inside BE ``be`` (its cmdline names it)."""
    root = w.bes[f"rpool/ROOT/{be}"]
    (root / "etc/kernel/cmdline").write_text(f"root=ZFS=rpool/ROOT/{be} boot=zfs quiet\n")
    w.pbt_refresh_entries(be)


def _refresh_does(w: World, effect: str) -> None:
    """The world's runner answers ``proxmox-boot-tool refresh``: from the running pve-1
    (``ok``), or failing half-way under set -e after resetting the defaults (``fail``)."""
    real = w.runner.run

    def run(argv: Sequence[str], *, readonly: bool = False, check: bool = True) -> Result:
        if tuple(argv) == REFRESH and not w.runner.dry_run:
            w.runner.calls.append(REFRESH)
            if effect == "ok":
                w.pbt_refresh_entries("pve-1")
                return Result(REFRESH, 0, "", "")
            for esp in w.esps.values():
                w.pbt_refresh(esp)
            raise CommandError(list(REFRESH), 1, "cp: error writing: No space left on device")
        return real(argv, readonly=readonly, check=check)

    w.runner.run = run  # type: ignore[method-assign]


def _fallback_boots(w: World, uuid: str) -> str | None:
    """What ESP ``uuid`` boots after an NVRAM reset and a reinit (loader.conf rewritten)."""
    for var in ("LoaderEntryDefault", "LoaderEntryOneShot"):
        (w.efivars / f"{var}-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f").unlink(missing_ok=True)
    w.pbt_reinit(w.esps[uuid])
    return w.booted(uuid)


@pytest.fixture
def w(sdboot_world: World) -> World:
    w = sdboot_world
    w.backend.init(w.ref("pve-1"))
    w.add_be("pve-2", clone_of="pve-1")
    w.backend.post_create(w.ref("pve-2"))
    return w


def test_destroying_the_be_proxmox_entries_boot_refreshes_from_the_running_be(w: World) -> None:
    _refreshed_from(w, "pve-2")  # e.g. a kernel update inside pve-2 while it ran
    w.backend.activate(w.ref("pve-1"), temporary=False)
    _refresh_does(w, "ok")
    defaults = {u: (w.esps[u] / "loader/loader.conf").read_text() for u in UUIDS}
    del w.bes["rpool/ROOT/pve-2"]
    w.backend.post_destroy(w.ref("pve-2"))
    assert w.runner.calls.count(REFRESH) == 1
    for u in UUIDS:
        # the default beadm had set is back after the refresh reset it to proxmox-*
        assert (w.esps[u] / "loader/loader.conf").read_text() == defaults[u]
        assert w.booted(u) == "pve-1"
        assert _fallback_boots(w, u) == "pve-1"


def test_destroying_another_be_runs_no_refresh(w: World) -> None:
    w.backend.activate(w.ref("pve-1"), temporary=False)
    _refresh_does(w, "ok")
    del w.bes["rpool/ROOT/pve-2"]
    assert w.backend.post_destroy(w.ref("pve-2")) == ()
    assert REFRESH not in w.runner.calls


def test_renaming_the_be_proxmox_entries_boot_refreshes(w: World) -> None:
    _refreshed_from(w, "pve-2")
    w.backend.activate(w.ref("pve-1"), temporary=False)
    _refresh_does(w, "ok")
    w.rename_be("pve-2", "pve-3")
    w.backend.post_rename(w.ref("pve-2"), w.ref("pve-3"))
    assert w.runner.calls.count(REFRESH) == 1
    for u in UUIDS:
        assert w.booted(u) == "pve-1"
        assert _fallback_boots(w, u) == "pve-1"


def test_a_failing_refresh_is_a_warning_and_the_default_is_kept(w: World) -> None:
    _refreshed_from(w, "pve-2")
    w.backend.activate(w.ref("pve-1"), temporary=False)
    _refresh_does(w, "fail")
    del w.bes["rpool/ROOT/pve-2"]
    warned = w.backend.post_destroy(w.ref("pve-2"))
    assert any("proxmox-boot-tool refresh' failed" in n and "rpool/ROOT/pve-2" in n
               for n in warned), warned
    for u in UUIDS:
        assert w.booted(u) == "pve-1"  # beadm's default holds, also in loader.conf


def test_dry_run_says_it_would_refresh(tmp_path: Path) -> None:
    w = World(tmp_path, dry_run=True)
    _refreshed_from(w, "pve-1")  # the world's pve-1 entries, named as such
    w.backend.post_destroy(w.ref("pve-1", running=False))
    assert REFRESH in w.runner.calls


def test_a_stale_default_naming_the_gone_be_is_not_put_back(w: World) -> None:
    """loader.conf still named pve-2 (the EFI variable, which wins, named pve-1): destroy
    resets that line, and the refresh's aftermath must not put the dead name back."""
    _refreshed_from(w, "pve-2")
    w.backend.activate(w.ref("pve-2"), temporary=False)
    w.backend.activate(w.ref("pve-1"), temporary=False)
    for u in UUIDS:  # as if the loader.conf write of the second activate had been lost
        (w.esps[u] / "loader/loader.conf").write_text(
            f"timeout 3\ndefault {w.efi('LoaderEntryDefault').replace('pve-1', 'pve-2')}\n")
    _refresh_does(w, "ok")
    del w.bes["rpool/ROOT/pve-2"]
    w.backend.post_destroy(w.ref("pve-2"))
    from beadm.esp.store import EspStore

    for u in UUIDS:
        assert "pve-2" not in (EspStore(w.esps[u], u).loader_default() or "")
        assert _fallback_boots(w, u) == "pve-1"
