from __future__ import annotations

from pathlib import Path

import pytest

from beadm.backend import BeRef
from beadm.errors import CommandError, ExistsError, InvalidNameError, NotFoundError, UsageError
from worlds.fakes import pool_props
from worlds.pool import LIST_TEXT, SNAP, manager, row

CLEAR = ("zfs", "inherit", "org.beadm:state")


def test_create_from_running_exact_argv(tmp_path: Path) -> None:
    mgr, runner, backend = manager(tmp_path)
    ref = mgr.create("pve-3", description="new one", props=["com.example:x=1"]).be
    assert ref == BeRef("pve-3", "rpool/ROOT/pve-3", "new one", False)
    assert runner.changes == [
        (
            "zfs", "snapshot", "-r", "-o", "org.beadm:state=creating",
            f"rpool/ROOT/pve-1@{SNAP}",
        ),
        (
            "zfs", "clone", "-o", "mountpoint=/", "-o", "acltype=posix",
            "-o", "com.example:note=a\tb", "-o", "canmount=noauto",
            "-o", "org.beadm:state=creating", "-o", "org.beadm:description=new one",
            "-o", "com.example:x=1", f"rpool/ROOT/pve-1@{SNAP}", "rpool/ROOT/pve-3",
        ),
        (
            "zfs", "clone", "-o", "compression=zstd", "-o", "canmount=noauto",
            "-o", "org.beadm:state=creating", f"rpool/ROOT/pve-1/var@{SNAP}",
            "rpool/ROOT/pve-3/var",
        ),
        # every mark cleared by one zfs process (issue 15); any subset cleared by a kill
        # is finished by the next command (lab: test_killed_create_leaves_no_half_be)
        (*CLEAR, f"rpool/ROOT/pve-1@{SNAP}", f"rpool/ROOT/pve-1/var@{SNAP}",
         "rpool/ROOT/pve-3", "rpool/ROOT/pve-3/var"),
    ]  # fmt: skip
    assert backend.calls == [("post_create", ref)]


def test_create_queries_are_readonly(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    mgr.create("pve-3")
    reads = [c for c in runner.calls if c not in runner.changes]
    assert all(c[:2] in (("zfs", "list"), ("zfs", "get"), ("zpool", "get")) for c in reads)


def test_create_from_snapshot_makes_no_snapshot(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    mgr.create("pve-3", source="pve-1@beadm-20261120-101010")
    assert not any(c[:2] == ("zfs", "snapshot") for c in runner.changes)
    clones = [c for c in runner.changes if c[:2] == ("zfs", "clone")]
    assert [c[-2:] for c in clones] == [
        ("rpool/ROOT/pve-1@beadm-20261120-101010", "rpool/ROOT/pve-3"),
        ("rpool/ROOT/pve-1/var@beadm-20261120-101010", "rpool/ROOT/pve-3/var"),
    ]
    # the source snapshot is not ours: its mark is not touched
    assert [c[3:] for c in runner.changes if c[:3] == CLEAR] == [
        ("rpool/ROOT/pve-3", "rpool/ROOT/pve-3/var"),
    ]


def test_create_from_snapshot_missing_on_child_is_refused(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    with pytest.raises(NotFoundError, match="pve-1/var@manual"):
        mgr.create("pve-3", source="pve-1@manual")
    assert runner.changes == []


def test_create_from_other_be(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    mgr.create("pve-3", source="pve-2")
    assert runner.changes[0][-1] == f"rpool/ROOT/pve-2@{SNAP}"


def test_snapshot_name_is_unique(tmp_path: Path) -> None:
    listing = LIST_TEXT + row(f"rpool/ROOT/pve-1@{SNAP}") + row(f"rpool/ROOT/pve-1@{SNAP}-1")
    mgr, runner, _ = manager(tmp_path, listing=listing)
    mgr.create("pve-3")
    assert runner.changes[0][-1] == f"rpool/ROOT/pve-1@{SNAP}-2"


def test_create_existing(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    with pytest.raises(ExistsError):
        mgr.create("pve-2")
    assert runner.changes == []


def test_create_without_running_uses_bootfs(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path, mountinfo="", root="rpool/ROOT")
    mgr.create("pve-3")
    assert runner.changes[0][-1] == f"rpool/ROOT/pve-1@{SNAP}"


def test_create_without_running_or_bootfs(tmp_path: Path) -> None:
    mgr, _runner, _ = manager(tmp_path, mountinfo="", root="rpool/ROOT", bootfs="-")
    with pytest.raises(UsageError, match="-e"):
        mgr.create("pve-3")


def test_child_clone_failure_undoes_this_create_only(tmp_path: Path) -> None:
    mgr, runner, backend = manager(tmp_path)
    runner.fail("zfs", "clone", "-o", "compression=zstd")
    with pytest.raises(CommandError):
        mgr.create("pve-3")
    assert runner.changes[-2:] == [
        ("zfs", "destroy", "rpool/ROOT/pve-3"),
        ("zfs", "destroy", "-r", f"rpool/ROOT/pve-1@{SNAP}"),
    ]
    assert backend.calls == []


def test_backend_failure_undoes_everything(tmp_path: Path) -> None:
    from worlds.fakes import RecordingBackend

    backend = RecordingBackend(fail_on="post_create")
    mgr, runner, _ = manager(tmp_path, backend=backend)
    with pytest.raises(Exception, match="post_create failed"):
        mgr.create("pve-3")
    assert [c[0] for c in backend.calls] == ["post_create", "post_destroy"]
    assert runner.changes[-3:] == [
        ("zfs", "destroy", "rpool/ROOT/pve-3/var"),
        ("zfs", "destroy", "rpool/ROOT/pve-3"),
        ("zfs", "destroy", "-r", f"rpool/ROOT/pve-1@{SNAP}"),
    ]


def test_bad_props_rejected_before_anything(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    for bad in (["novalue"], ["=x"], ["org.beadm:state=x"]):
        with pytest.raises(UsageError):
            mgr.create("pve-3", props=bad)
    with pytest.raises(UsageError):
        mgr.create("pve-3", description="two\nlines")
    assert runner.calls == []


def test_create_be_snapshot(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    assert mgr.create("pve-1@before").what == "rpool/ROOT/pve-1@before"
    assert runner.changes == [("zfs", "snapshot", "-r", "rpool/ROOT/pve-1@before")]
    with pytest.raises(ExistsError):
        mgr.create("pve-1@manual")
    with pytest.raises(NotFoundError):
        mgr.create("nope@x")


def test_altroot_is_not_copied_into_mountpoints(tmp_path: Path) -> None:
    from beadm.zfs import parse_get

    mgr, runner, _ = manager(tmp_path)
    runner.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-1", altroot="/mnt/x"))
    text = "rpool/ROOT/pve-1\tmountpoint\t/mnt/x\tlocal\n"
    text += "rpool/ROOT/pve-1/var\tmountpoint\t/mnt/x/var\tlocal\n"
    assert len(parse_get(text)) == 2
    runner.on("zfs", "get", "-H", "-p", "-o", "name,property,value,source", stdout=text)
    mgr.create("pve-3")
    clones = [c for c in runner.changes if c[:2] == ("zfs", "clone")]
    assert clones[0][2:4] == ("-o", "mountpoint=/")
    assert clones[1][2:4] == ("-o", "mountpoint=/var")


@pytest.mark.parametrize("ch", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
                                "\u2029", "\x00", "\x7f", "\udcff"])
def test_description_with_control_character_refused(tmp_path: Path, ch: str) -> None:
    mgr, runner, _ = manager(tmp_path)
    with pytest.raises(UsageError, match="control character"):
        mgr.create("pve-3", description=f"a{ch}b")
    assert runner.calls == []


@pytest.mark.parametrize(
    "prop",
    ["canmount=on", "canmount=noauto", "mountpoint=/mnt", "org.beadm:next=pve-1",
     "org.beadm:description=x", "org.beadm:state=", "origin=x", "com.example:x=a\x85b",
     "com.example:x=a\u2028b", "com.exa\x0bmple:x=1"],
)
def test_owned_or_unprintable_props_refused(tmp_path: Path, prop: str) -> None:
    mgr, runner, _ = manager(tmp_path)
    with pytest.raises(UsageError):
        mgr.create("pve-3", props=[prop])
    assert runner.calls == []


@pytest.mark.parametrize("source", [None, "pve-1@beadm-20261120-101010", "pve-2"])
def test_case_only_different_name_refused(tmp_path: Path, source: str | None) -> None:
    mgr, runner, backend = manager(tmp_path)
    with pytest.raises(ExistsError, match="only in case"):
        mgr.create("PVE-2", source=source)
    assert runner.changes == [] and backend.calls == []


def test_fat_invalid_name_refused(tmp_path: Path) -> None:
    mgr, runner, _ = manager(tmp_path)
    with pytest.raises(InvalidNameError, match="FAT"):
        mgr.create("a:b")
    assert runner.calls == []
