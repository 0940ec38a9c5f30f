"""The GRUB backend on a directory model of a Proxmox GRUB host (grub_world), booted by a
small GRUB that runs grub.cfg's and custom.cfg's logic on the files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from beadm.errors import BootError
from beadm.grub import grubenv, menu
from beadm.grub.backend import GrubBackend
from worlds.grub import K1, K2, UUIDS, GrubWorld, env_block
from worlds.sdboot import PropRunner, tree_snapshot

R = "rpool/ROOT"


def made(tmp: Path) -> GrubWorld:
    w = GrubWorld(tmp)
    w.backend.init(w.ref("pve-1"))
    w.add_be("pve-2", clone_of="pve-1")
    w.backend.post_create(w.ref("pve-2"))
    return w


def booted(w: GrubWorld) -> list[str | None]:
    return [w.boot(u) for u in UUIDS]


def test_init_alone_changes_what_boots_nowhere(grub_world: GrubWorld) -> None:
    w = grub_world
    assert booted(w) == ["pve-1", "pve-1"]
    w.backend.init(w.ref("pve-1"))
    assert booted(w) == ["pve-1", "pve-1"]
    text = (w.esps[UUIDS[0]] / "grub/custom.cfg").read_text()
    assert "set default" not in text
    assert text.count("menuentry ") == 2  # pve-1's two kernels
    # its cmdline: from /proc/cmdline (no /etc/kernel/cmdline on a legacy install), one root=
    line = (w.bes[f"{R}/pve-1"] / "etc/kernel/cmdline").read_text().splitlines()[0]
    assert line == f"root=ZFS={R}/pve-1 ro boot=zfs quiet"
    assert w.backend.boot_state(w.refs()).next_boot == "pve-1"  # from grub.cfg's first entry


def test_create_activate_boots_the_new_be_with_its_own_files(tmp_path: Path) -> None:
    w = made(tmp_path)
    # the clone's zfs.cfg names the clone (Proxmox's own entries refreshed from it boot it)
    zfs_cfg = w.bes[f"{R}/pve-2"] / "etc/default/grub.d/zfs.cfg"
    assert f"root=ZFS={R}/pve-2 " in zfs_cfg.read_text()
    assert booted(w) == ["pve-1", "pve-1"]  # created, not active
    (w.bes[f"{R}/pve-2"] / f"boot/vmlinuz-{K2}").write_bytes(b"pve-2's own kernel")
    w.backend.activate(w.ref("pve-2"), temporary=False)
    assert booted(w) == ["pve-2", "pve-2"]
    assert w.runner.props[(R, "org.beadm:next")] == "pve-2"
    for u in UUIDS:
        cfg = (w.esps[u] / "grub/custom.cfg").read_text()
        assert f"--set=root {u}" in cfg  # each ESP's menu finds itself
        linux = next(ln.split()[1] for ln in cfg.splitlines()
                     if ln.strip().startswith("linux") and "pve-2" in ln and K2 in ln)
        assert (w.esps[u] / linux.lstrip("/")).read_bytes() == b"pve-2's own kernel"
    st = w.backend.boot_state(w.refs())
    assert (st.next_boot, st.once, st.warnings) == ("pve-2", None, ())
    assert w.backend.check(w.refs()).problems == ()


def test_activation_survives_refresh_reinit_and_update_grub(tmp_path: Path) -> None:
    w = made(tmp_path)
    w.backend.activate(w.ref("pve-2"), temporary=False)
    before = {u: (w.esps[u] / "grub/custom.cfg").read_text() for u in UUIDS}
    w.pbt_refresh("pve-1")  # a kernel update or update-grub in pve-1: grub.cfg regenerated
    assert booted(w) == ["pve-2", "pve-2"]
    (w.bes[f"{R}/pve-1"] / "boot/vmlinuz-6.8.12-3-pve").write_bytes(b"k3")
    (w.bes[f"{R}/pve-1"] / "boot/initrd.img-6.8.12-3-pve").write_bytes(b"i3")
    w.pbt_refresh("pve-2")  # from the other BE, with a kernel set that deletes root kernels
    assert booted(w) == ["pve-2", "pve-2"]
    assert {u: (w.esps[u] / "grub/custom.cfg").read_text() for u in UUIDS} == before
    w.backend.sync(w.refs(), only_if_used=True)  # the hook after the kernel update
    assert booted(w) == ["pve-2", "pve-2"]
    assert w.backend.check(w.refs()).problems == ()


def test_one_shot_boots_once_then_the_default(tmp_path: Path) -> None:
    w = made(tmp_path)
    w.add_be("pve-3", {"6.9.0-1-pve": b"k9"}, clone_of="pve-1")
    w.backend.post_create(w.ref("pve-3"))
    w.backend.activate(w.ref("pve-2"), temporary=False)
    w.backend.activate(w.ref("pve-3"), temporary=True)
    st = w.backend.boot_state(w.refs())
    assert (st.next_boot, st.once) == ("pve-2", "pve-3")
    assert w.boot(UUIDS[0]) == "pve-3"  # consumed on the ESP GRUB loaded
    assert w.boot(UUIDS[0]) == "pve-2"
    assert w.next_entry(UUIDS[1]) == menu.entry_id("pve-3", "6.9.0-1-pve")
    w.backend.sync(w.refs())  # the other ESP still holds it: the one-shot happened
    assert w.next_entry(UUIDS[1]) == ""
    assert booted(w) == ["pve-2", "pve-2"]
    assert w.backend.boot_state(w.refs()).once is None


def test_activate_overrides_a_pending_one_shot(tmp_path: Path) -> None:
    w = made(tmp_path)
    w.backend.activate(w.ref("pve-2"), temporary=True)
    w.backend.activate(w.ref("pve-1"), temporary=False)
    assert [w.next_entry(u) for u in UUIDS] == ["", ""]
    assert booted(w) == ["pve-1", "pve-1"]


def test_rename_moves_entries_default_and_fallback(tmp_path: Path) -> None:
    w = made(tmp_path)
    w.backend.activate(w.ref("pve-2"), temporary=False)
    w.rename_be("pve-2", "blue")
    w.backend.post_rename(w.ref("pve-2"), w.ref("blue"))
    assert booted(w) == ["blue", "blue"]
    assert w.runner.props[(R, "org.beadm:next")] == "blue"
    assert f"root=ZFS={R}/blue " in (w.bes[f"{R}/blue"] / "etc/default/grub.d/zfs.cfg").read_text()
    text = (w.esps[UUIDS[0]] / "grub/custom.cfg").read_text()
    assert "pve-2" not in text
    assert w.backend.check(w.refs()).problems == ()


def test_destroy_removes_entries_frees_files_and_revives_fallback(tmp_path: Path) -> None:
    w = made(tmp_path)
    (w.bes[f"{R}/pve-2"] / f"boot/vmlinuz-{K2}").write_bytes(b"only in pve-2")
    w.backend.sync(w.refs())
    w.pbt_refresh("pve-2")  # Proxmox's grub.cfg entries now boot pve-2
    files = w.files(UUIDS[0])
    del w.bes[f"{R}/pve-2"]
    w.backend.post_destroy(w.ref("pve-2"))
    assert ("proxmox-boot-tool", "refresh") in w.runner.calls
    assert len(w.files(UUIDS[0])) == len(files) - 1  # pve-2's own kernel freed
    assert "pve-2" not in (w.esps[UUIDS[0]] / "grub/custom.cfg").read_text()
    w.pbt_refresh("pve-1")  # what the real refresh would have done
    assert booted(w) == ["pve-1", "pve-1"]
    assert w.backend.check(w.refs()).problems == ()


def test_destroying_the_default_leaves_grub_cfg_deciding(tmp_path: Path) -> None:
    w = made(tmp_path)
    w.backend.activate(w.ref("pve-2"), temporary=False)
    w.backend.activate(w.ref("pve-1"), temporary=False)
    del w.bes[f"{R}/pve-2"]
    w.backend.post_destroy(w.ref("pve-2"))
    assert booted(w) == ["pve-1", "pve-1"]
    assert ("proxmox-boot-tool", "refresh") not in w.runner.calls


def test_check_reports_drift_and_sync_repairs_it(tmp_path: Path) -> None:
    w = made(tmp_path)
    w.backend.activate(w.ref("pve-2"), temporary=False)
    (w.esps[UUIDS[1]] / "grub/custom.cfg").unlink()
    (w.bes[f"{R}/pve-2"] / "etc/default/grub.d/zfs.cfg").write_text(
        'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX root=ZFS=rpool/ROOT/pve-1 boot=zfs"\n')
    (w.esps[UUIDS[0]] / "beadm" / ("0" * 16 + "-vmlinuz-stale")).write_bytes(b"x")
    problems = w.backend.check(w.refs()).problems
    assert any("custom.cfg is missing" in p and UUIDS[1] in p for p in problems)
    assert any("zfs.cfg" in p and "pve-2" in p for p in problems)
    assert any("referenced by no entry" in p for p in problems)
    assert w.boot(UUIDS[1]) == "pve-1"  # that ESP lost the choice
    w.backend.sync(w.refs())
    assert w.backend.check(w.refs()).problems == ()
    assert booted(w) == ["pve-2", "pve-2"]


def test_grub_cfg_without_custom_cfg_is_reported(tmp_path: Path) -> None:
    w = made(tmp_path)
    w.pbt_refresh("pve-1", custom=False)  # a BE whose /etc/grub.d/41_custom is gone
    assert any("does not read custom.cfg" in p for p in w.backend.check(w.refs()).problems)


def test_foreign_custom_cfg_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    w = GrubWorld(tmp_path)
    (w.esps[UUIDS[1]] / "grub/custom.cfg").write_text("menuentry 'mine' { true }\n")
    before = tree_snapshot(tmp_path / "esp")
    with pytest.raises(BootError, match=r"custom\.cfg was not written by beadm"):
        w.backend.activate(w.ref("pve-1"), temporary=False)
    assert tree_snapshot(tmp_path / "esp") == before


def test_sync_if_used_does_nothing_before_init(tmp_path: Path) -> None:
    w = GrubWorld(tmp_path)
    before = tree_snapshot(tmp_path / "esp")
    w.backend.sync(w.refs(), only_if_used=True)
    assert tree_snapshot(tmp_path / "esp") == before


def test_degraded_host_changes_the_present_esp_and_warns(tmp_path: Path) -> None:
    w = made(tmp_path)
    gone = w.esps[UUIDS[1]]
    gone.rename(tmp_path / "pulled")
    warned = w.backend.activate(w.ref("pve-2"), temporary=False)
    assert w.boot(UUIDS[0]) == "pve-2"
    assert any(UUIDS[1] in n for n in warned)
    (tmp_path / "pulled").rename(gone)
    assert w.boot(UUIDS[1]) == "pve-1"  # booted meanwhile: what it booted before
    w.backend.sync(w.refs())
    assert booted(w) == ["pve-2", "pve-2"]


def test_grubenv_block() -> None:
    data = grubenv.render({"next_entry": "beadm-a-1", "saved_entry": "x\\y"})
    assert len(data) == 1024
    assert grubenv.parse(data) == {"next_entry": "beadm-a-1", "saved_entry": "x\\y"}
    assert grubenv.parse(env_block({"a": "b"})) == {"a": "b"}
    assert grubenv.parse(b"# GRUB Environment Block\n") is None  # not 1024 bytes
    with pytest.raises(BootError):
        grubenv.render({"k": "v" * 1100})


def test_menu_quotes_titles_and_options(grub_world: GrubWorld) -> None:
    w = grub_world
    (w.bes[f"{R}/pve-1"] / "etc/kernel/cmdline").write_text(
        f"root=ZFS={R}/pve-1 boot=zfs acpi_osi='Windows 2020' $x\n")
    w.backend.init(w.ref("pve-1", desc="it's mine"))
    text = (w.esps[UUIDS[0]] / "grub/custom.cfg").read_text()
    assert "menuentry 'pve-1 - it'\\''s mine (" in text
    assert "'acpi_osi='\\''Windows' '2020'\\''' '$x'" in text
    parsed = menu.parse(text)
    assert parsed is not None and parsed.items[0].options.endswith("$x")


Op = Callable[[GrubWorld], None]


def _kernel_update(w: GrubWorld) -> None:
    root = w.bes[f"{R}/pve-1"]
    (root / "boot/vmlinuz-6.9.0-1-pve").write_bytes(b"v9")
    (root / "boot/initrd.img-6.9.0-1-pve").write_bytes(b"i9")
    w.backend.sync(w.refs())


def _rename(w: GrubWorld) -> None:
    w.rename_be("pve-2", "renamed")
    w.backend.post_rename(w.ref("pve-2"), w.ref("renamed"))


def _destroy(w: GrubWorld) -> None:
    del w.bes[f"{R}/old"]
    w.backend.post_destroy(w.ref("old"))


OPS: dict[str, tuple[Op, set[str]]] = {
    "activate": (lambda w: w.backend.activate(w.ref("pve-2"), temporary=False),
                 {"pve-1", "pve-2"}),
    "activate-t": (lambda w: w.backend.activate(w.ref("pve-2"), temporary=True),
                   {"pve-1", "pve-2"}),
    "create": (lambda w: (w.add_be("pve-3", clone_of="pve-2"),
                          w.backend.post_create(w.ref("pve-3")))[-1], {"pve-1"}),
    "destroy": (_destroy, {"pve-1"}),
    "rename": (_rename, {"pve-1"}),
    "kernel-update+sync": (_kernel_update, {"pve-1"}),
}


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the backend catches it."""


@pytest.mark.parametrize("op", sorted(OPS))
def test_killed_at_every_step(tmp_path: Path, op: str) -> None:
    """After a kill before any change on any ESP, every ESP boots the old or the new next
    BE from files that exist (the small GRUB asserts them); sync then leaves no drift."""
    fn, allowed = OPS[op]
    k = 0
    while True:
        w = made(tmp_path / f"run{k}")
        w.add_be("old", {"6.1.0-1-pve": b"old"})
        w.backend.post_create(w.ref("old"))
        w.backend.activate(w.ref("pve-1"), temporary=False)
        steps: list[str] = []

        def step(what: str, steps: list[str] = steps, k: int = k) -> None:
            if len(steps) == k:
                raise Killed(what)
            steps.append(what)

        w.host.step = step
        try:
            fn(w)
        except Killed:
            pass
        else:
            break
        finally:
            w.host.step = None
        for u in UUIDS:
            # a GRUB boot consumes next_entry: look at a copy of the ESP
            assert _boot_copy(w, u) in allowed, (op, k, steps)
        if op == "rename" and f"{R}/renamed" in w.bes:
            w.backend.post_rename(w.ref("pve-2"), w.ref("renamed"))
        w.backend.sync(w.refs())
        assert w.backend.check(w.refs()).problems == (), (op, k, steps)
        k += 1
        assert k < 200
    assert k > 0, f"{op} made no change on the ESPs"


def _boot_copy(w: GrubWorld, uuid: str) -> str | None:
    env = w.esps[uuid] / "grub/grubenv"
    saved = env.read_bytes()
    try:
        return w.boot(uuid)
    finally:
        env.write_bytes(saved)


def test_activate_writes_files_on_every_esp_before_any_menu(tmp_path: Path) -> None:
    w = made(tmp_path)
    w.add_be("pve-3", {"6.9.0-1-pve": b"new"}, clone_of="pve-2")
    seen: list[str] = []
    w.host.step = seen.append
    w.backend.activate(w.ref("pve-3"), temporary=False)
    files = [i for i, s in enumerate(seen) if s.startswith("rename beadm/")]
    menus = [i for i, s in enumerate(seen) if s == "rename grub/custom.cfg"]
    gcs = [i for i, s in enumerate(seen) if s.startswith("unlink")]
    assert len(menus) == len(UUIDS) and files
    assert max(files) < min(menus)
    assert not gcs or min(gcs) > min(menus)
    assert K1 and K2  # the world's kernels


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    w = made(tmp_path)
    before = tree_snapshot(tmp_path)
    runner = PropRunner(dry_run=True)
    runner.props = dict(w.runner.props)
    w.host.dry_run = True
    backend = GrubBackend(runner, host=w.host, out=w.out)
    backend.activate(w.ref("pve-2"), temporary=False)
    assert tree_snapshot(tmp_path) == before
    assert "would write ESP" in w.out.getvalue()
