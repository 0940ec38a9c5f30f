"""activate's guard (beadm.rollback_guard): a BE that can break the Proxmox cluster is
refused without --force, network/identity drift is shown as a diff; the running root and
the target BE are temporary directories (the fake runner's ``mount`` copies the target in)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beadm import rollback_guard as rg
from beadm.backend import BeRef
from beadm.errors import ClusterGuardError
from worlds.fakes import RecordingBackend
from worlds.guard import HOSTS, IFACES, RUNNING, SHARED_COROSYNC, R, World, write


def conf(name: str = "prod", version: int = 3, nodes: tuple[str, ...] = ("pve1", "pve2")) -> str:
    """A corosync.conf as Proxmox writes it."""
    nodelist = "".join(
        f"  node {{\n    name: {n}\n    nodeid: {i}\n    quorum_votes: 1\n"
        f"    ring0_addr: fd00::{i}\n  }}\n" for i, n in enumerate(nodes, 1))
    return (f"logging {{\n  debug: off\n  to_syslog: yes\n}}\n\nnodelist {{\n{nodelist}}}\n\n"
            f"quorum {{\n  provider: corosync_votequorum\n}}\n\n"
            f"totem {{\n  cluster_name: {name}\n  config_version: {version}\n"
            f"  interface {{\n    linknumber: 0\n  }}\n  ip_version: ipv4-6\n"
            f"  secauth: on\n  version: 2\n}}\n")


@pytest.fixture
def w(guard_world: World) -> World:
    return guard_world


# -- corosync.conf ------------------------------------------------------------------------


def test_parse_corosync_as_proxmox_writes_it() -> None:
    c = rg.parse_corosync(conf("prod", 7, ("pve3", "pve1", "pve2")))
    assert c == rg.Cluster(rg.CLUSTERED, "prod", "7", ("pve1", "pve2", "pve3"))
    # '=' separators, comments, tabs, CRLF-free blank lines
    text = "# c\ntotem {\n\tcluster_name = lab\n}\nnodelist {\n node {\n  name = a\n }\n}\n"
    assert rg.parse_corosync(text) == rg.Cluster(rg.CLUSTERED, "lab", "?", ("a",))


@pytest.mark.parametrize(("text", "why"), [
    ("totem {\n cluster_name: x\n", "section totem is not closed"),
    ("}\n", "line 1: '}' closes no section"),
    ("totem {\n cluster_name x\n}\n", "line 2: neither 'key: value' nor a section"),
    ("totem {\n config_version: 2\n}\n", "no cluster_name in totem"),
    ("totem {\n cluster_name: x\n}\nnodelist {\n node {\n  nodeid: 1\n }\n}\n",
     "line 7: a node without a name"),
    ("\x00\xff garbage", "line 1: neither 'key: value' nor a section"),
    ("", "no cluster_name in totem"),
])
def test_malformed_corosync_conf_is_unknown(text: str, why: str) -> None:
    assert rg.parse_corosync(text) == rg.Cluster(rg.UNKNOWN, why=why)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("totem{}: \n#=nodelistname_abc\t\x85\u2028")),
               max_size=200))
def test_parse_corosync_never_crashes(text: str) -> None:
    c = rg.parse_corosync(text)
    assert c.kind in (rg.CLUSTERED, rg.UNKNOWN)
    assert (c.kind == rg.UNKNOWN) == bool(c.why)


def test_symlinks_resolve_inside_the_root_not_on_this_machine(tmp_path: Path) -> None:
    root = tmp_path / "be"
    write(root, {"/etc/pve/corosync.conf": conf("inside")})
    (root / "etc/corosync").mkdir()
    (root / "etc/corosync/corosync.conf").symlink_to("/etc/pve/corosync.conf")
    (root / "etc/hosts").symlink_to("/etc/hosts")  # a loop inside the root, not this host's
    assert rg.cluster_of(rg.read_in(root, rg.COROSYNC_CONF)).name == "inside"
    assert rg.read_in(root, "/etc/hosts") == rg.Content(None, "a symbolic link loop")
    assert rg.read_in(root, "/etc/hostname").missing
    assert rg.read_in(root, "/etc/pve") == rg.Content(None, "a directory")


# -- activate: the cluster guard ------------------------------------------------------------


def refused(w: World, *argv: str, reason: str) -> str:
    rc, out, err = w.cli(*argv, "activate", "old")
    assert rc == 5, err
    lines = err.splitlines()
    assert lines == ["beadm: not activating old: booting it can break the Proxmox cluster; "
                     f"activate --force does it anyway; {reason}"]  # one line, as every error
    assert w.changes == [] and w.backend.calls == []
    assert "would run" not in out
    assert w.mounted == [f"{R}/old"] * len(w.runners)
    return out


def test_refuses_a_be_older_than_the_cluster_join(w: World) -> None:
    write(w.cur, {"/etc/corosync/corosync.conf": conf("prod")})
    refused(w, reason=f"BE old predates the cluster join: it has no {rg.COROSYNC_CONF} and "
                      "would boot standalone, out of cluster prod")


def test_a_trial_boot_is_guarded_the_same(w: World) -> None:
    write(w.cur, {"/etc/corosync/corosync.conf": conf("prod")})
    rc, _out, err = w.cli("activate", "--trial", "old")
    assert rc == 5 and "booting it can break the Proxmox cluster" in err, err
    assert w.changes == [] and w.backend.calls == []
    rc, _out, err = w.cli("activate", "--trial", "--force", "old")
    assert rc == 0, err
    assert [c[0] for c in w.backend.calls] == ["activate_trial"]


def test_refuses_a_be_older_than_the_nodes_removal(w: World) -> None:
    write(w.old, {"/etc/corosync/corosync.conf": conf("prod")})
    refused(w, reason="BE old predates the node's removal from cluster prod: booting it "
                      "brings a removed node back")


def test_refuses_a_be_with_another_corosync_config(w: World) -> None:
    write(w.cur, {"/etc/corosync/corosync.conf": conf("prod", 5, ("pve1", "pve2", "pve3"))})
    write(w.old, {"/etc/corosync/corosync.conf": conf("prod", 3, ("pve1", "pve2"))})
    refused(w, reason="corosync config differs: BE old has nodes pve1,pve2 "
                      "(running: pve1,pve2,pve3); config_version 3 (running: 5)")
    write(w.old, {"/etc/corosync/corosync.conf": conf("test", 5, ("pve1", "pve2", "pve3"))})
    w.runners.clear()
    w.mounted.clear()
    refused(w, reason="corosync config differs: BE old has cluster name test (running: prod)")


def test_refuses_a_be_whose_corosync_conf_is_malformed(w: World) -> None:
    write(w.cur, {"/etc/corosync/corosync.conf": conf("prod")})
    write(w.old, {"/etc/corosync/corosync.conf": "totem {\n cluster_name: prod\n"})
    refused(w, reason=f"BE old: cannot tell whether it keeps the cluster: its "
                      f"{rg.COROSYNC_CONF} cannot be read (section totem is not closed)")


def test_dry_run_refuses_the_same_and_runs_nothing(w: World) -> None:
    write(w.cur, {"/etc/corosync/corosync.conf": conf("prod")})
    refused(w, "-n", reason=f"BE old predates the cluster join: it has no {rg.COROSYNC_CONF} "
                            "and would boot standalone, out of cluster prod")


def test_force_activates_and_warns(w: World) -> None:
    write(w.cur, {"/etc/corosync/corosync.conf": conf("prod")})
    rc, _, err = w.cli("activate", "--force", "old")
    assert rc == 0, err
    assert err == ("beadm: warning: BE old predates the cluster join: it has no "
                   f"{rg.COROSYNC_CONF} and would boot standalone, out of cluster prod\n")
    assert ("zpool", "set", f"bootfs={R}/old", "rpool") in w.changes
    assert [c[0] for c in w.backend.calls] == ["activate"]


def test_dry_run_with_force_shows_the_warning_and_the_plan(w: World) -> None:
    write(w.old, {"/etc/corosync/corosync.conf": conf("prod")})
    rc, out, err = w.cli("-n", "activate", "--force", "old")
    assert rc == 0, err
    assert "beadm: warning: BE old predates the node's removal from cluster prod" in err
    assert f"would run: zpool set bootfs={R}/old rpool" in out
    assert w.changes == []


def test_same_cluster_config_passes_silently(w: World) -> None:
    text = conf("prod")
    write(w.cur, {"/etc/corosync/corosync.conf": text})
    write(w.old, {"/etc/corosync/corosync.conf": text.replace("debug: off", "debug: on")})
    rc, _, err = w.cli("activate", "old")
    assert (rc, err) == (0, "")
    assert [c[0] for c in w.backend.calls] == ["activate"]


def test_shared_corosync_dataset_is_read_not_the_shadowed_copy(tmp_path: Path) -> None:
    """init --shared-state: /etc/corosync is rpool/etc-corosync in every BE; the BE's own
    directory under it is stale (here: from before the join) and must not count."""
    w = World(tmp_path, mountinfo=SHARED_COROSYNC)
    write(w.cur, {"/etc/corosync/corosync.conf": conf("prod")})
    rc, _, err = w.cli("activate", "old")
    assert (rc, err) == (0, "")
    # without the shared dataset the same BE is refused
    w.mountinfo.write_text(RUNNING)
    rc, _, err = w.cli("activate", "old")
    assert rc == 5 and "predates the cluster join" in err


def test_activating_the_running_be_compares_nothing(w: World) -> None:
    write(w.old, {"/etc/corosync/corosync.conf": conf("prod")})
    rc, _, err = w.cli("activate", "cur")
    assert (rc, err) == (0, "")
    assert w.mounted == []


def test_library_raises_the_closed_error_with_its_reasons(w: World) -> None:
    from beadm.be import BeManager
    from beadm.lock import Lock

    write(w.cur, {"/etc/corosync/corosync.conf": conf("prod")})
    mgr = BeManager(w.runner(), w.backend, mountinfo=w.mountinfo,  # type: ignore[arg-type]
                    lock=Lock(w.tmp / "lock", 0.2), running_root=w.cur)
    seen: list[rg.Report] = []
    with pytest.raises(ClusterGuardError) as exc:
        mgr.activate("old", on_report=seen.append)
    assert exc.value.exit_code == 5 and "\n" not in exc.value.message
    assert seen and seen[0].cluster == exc.value.reasons


# -- activate: network and identity drift -------------------------------------------------


def test_network_drift_is_a_diff_on_stderr_and_never_refuses(w: World) -> None:
    write(w.old, {
        "/etc/hosts": HOSTS.replace("10.0.0.1", "10.0.0.9"),
        "/etc/network/interfaces": IFACES.replace("10.0.0.1/24", "10.0.0.9/24"),
        "/etc/network/interfaces.d/vlan": "auto vlan5\n",
    })
    (w.old / "etc/hostname").unlink()
    rc, _, err = w.cli("activate", "old")
    assert rc == 0
    assert [c[0] for c in w.backend.calls] == ["activate"]
    lines = err.splitlines()
    assert lines[0] == (
        "beadm: warning: /etc/network/interfaces, /etc/network/interfaces.d/vlan, "
        "/etc/hosts, /etc/hostname of BE old differ from the running BE cur; check them, "
        "or the host may boot unreachable:")
    assert "--- cur:/etc/network/interfaces" in lines
    assert "+++ old:/etc/network/interfaces" in lines
    assert "-\taddress 10.0.0.1/24" in lines and "+\taddress 10.0.0.9/24" in lines  # tabs kept
    assert "--- cur:/etc/network/interfaces.d/vlan (missing)" in lines
    assert "+auto vlan5" in lines
    assert "-10.0.0.1 pve1.example.com pve1" in lines
    assert "+++ old:/etc/hostname (missing)" in lines and "-pve1" in lines


def test_drift_escapes_unprintable_bytes(w: World) -> None:
    write(w.old, {"/etc/hostname": b"pve1\x1b[2J\xff\n"})
    rc, _, err = w.cli("activate", "old")
    assert rc == 0
    assert "+pve1\\x1b[2J\\xff" in err.splitlines()
    assert "\x1b" not in err


def test_drift_in_the_final_newline_only(w: World) -> None:
    write(w.old, {"/etc/hostname": "pve1"})
    rc, _, err = w.cli("activate", "old")
    assert rc == 0
    assert err.splitlines()[-1] == "(they differ only in the final newline)"


def test_no_drift_no_output(w: World) -> None:
    rc, _, err = w.cli("activate", "old")
    assert (rc, err) == (0, "")


# -- list --json ------------------------------------------------------------------------------


def test_list_json_carries_the_reasons_and_the_table_mounts_nothing(w: World) -> None:
    write(w.cur, {"/etc/corosync/corosync.conf": conf("prod")})
    write(w.old, {"/etc/hosts": "127.0.0.1 localhost\n"})
    rc, out, err = w.cli("list")
    assert (rc, err) == (0, "") and w.mounted == []
    rc, out, err = w.cli("list", "--json")
    assert (rc, err) == (0, "")
    bes = {b["name"]: b for b in json.loads(out)["bes"]}
    assert bes["cur"]["cluster_guard"] == [] and bes["cur"]["network_drift"] == []
    assert bes["old"]["cluster_guard"] == [
        f"BE old predates the cluster join: it has no {rg.COROSYNC_CONF} and would boot "
        "standalone, out of cluster prod"]
    assert bes["old"]["network_drift"] == ["/etc/hosts"]
    assert w.mounted == [f"{R}/old"]


def test_list_json_without_a_running_be_has_null(w: World) -> None:
    w.mountinfo.write_text("1 0 0:1 / / rw - ext4 /dev/sda1 rw\n")
    rc, out, err = w.cli("--root", R, "list", "--json")
    assert (rc, err) == (0, ""), err
    assert all(b["cluster_guard"] is None and b["network_drift"] is None
               for b in json.loads(out)["bes"])


# -- one mount of the target per command (issue 15) ----------------------------------------


class HoldingBackend(RecordingBackend):
    """A backend whose held session has the target BE mounted (``be_view``), as the
    systemd-boot backend's has when its hooks run in the same command."""

    def __init__(self, old: Path) -> None:
        super().__init__()
        self.old = old
        self.views: list[tuple[str, bool]] = []

    def release(self) -> None:
        self.calls.append(("release",))

    def be_view(self, be: BeRef, *, writable: bool) -> Path | None:
        if not self.held:
            return None
        self.views.append((be.name, writable))
        return self.old


def test_the_guard_reads_the_backends_mount_of_the_target_instead_of_its_own(w: World) -> None:
    w.backend = HoldingBackend(w.old)
    write(w.cur, {"/etc/corosync/corosync.conf": conf("prod")})
    rc, _, err = w.cli("activate", "old")
    assert rc == 5 and "predates the cluster join" in err, err  # read from the view
    assert w.mounted == []  # no mount of its own
    assert w.backend.views == [("old", False)]
    write(w.old, {"/etc/corosync/corosync.conf": conf("prod")})
    rc, _, err = w.cli("activate", "old")
    assert rc == 0, err
    assert w.mounted == [] and [c[0] for c in w.backend.calls] == ["activate"]


def test_list_json_reads_each_be_through_the_backends_view(w: World) -> None:
    w.backend = HoldingBackend(w.old)
    write(w.old, {"/etc/hostname": "elsewhere\n"})
    rc, out, err = w.cli("list", "--json")
    assert rc == 0, err
    assert w.mounted == [] and w.backend.views == [("old", False)]
    drift = {b["name"]: b["network_drift"] for b in json.loads(out)["bes"]}
    assert drift == {"cur": [], "old": ["/etc/hostname"]}
