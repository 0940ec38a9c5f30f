from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from beadm import __version__
from beadm.backend import BootState, KernelPin
from beadm.cli import Deps, human, main
from worlds.cli import Tty, run
from worlds.fakes import FakeRunner, RecordingBackend, pool_props
from worlds.pool import LIST_ARGV, LIST_FS_ARGV, LIST_TEXT, MOUNTINFO


def test_version_works_anywhere(tmp_path: Path) -> None:
    rc, out, _, _ = run(tmp_path, "version", euid=1000)
    assert (rc, out) == (0, f"beadm {__version__}\n")


def test_help_has_examples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["create", "--help"], ["umount", "--help"], ["list", "--help"]):
        assert main(argv) == 0
        assert "example:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["create", "a/b"], 2),
        (["create", "-x"], 2),
        (["create", "bad name"], 2),
        (["create", "x:"], 2),
        (["frobnicate"], 2),
        ([], 2),
        (["create", "pve-2"], 4),
        (["destroy", "-F", "pve-1"], 5),
        (["destroy", "-F", "nope"], 3),
        (["destroy", "pve-2"], 5),  # no terminal, no -F
        (["rename", "pve-1", "x"], 5),
        (["list", "nope"], 3),
        (["list", "-k", "name", "-K", "date"], 2),
        (["--root", "/not/a/dataset", "list"], 2),
        (["--root", "rpool", "sync"], 2),
        (["create", "-d", "a\x0bb", "pve-3"], 2),
        (["create", "-d", "a\u2028b", "pve-3"], 2),
        (["create", "-d", "a\udcffb", "pve-3"], 2),  # a non-UTF-8 argument
        (["create", "-o", "canmount=on", "pve-3"], 2),
        (["create", "-o", "mountpoint=/x", "pve-3"], 2),
        (["create", "-o", "org.beadm:next=pve-3", "pve-3"], 2),
        (["create", "PVE-2"], 4),
        (["create", "a:b"], 2),
        (["create", "a\x85b"], 2),
        (["rename", "pve-2", "PVE-1"], 4),
        (["rename", "pve-2", "a:b"], 2),
        (["mount", "pve-2", "/"], 5),
        (["mount", "pve-2", "/var"], 5),
        (["destroy", "-F", "-o", "pve-1@manual"], 2),
        # issue 24: '--' splits off apt's arguments for the upgrade command only, not for a
        # BE named "upgrade"
        (["create", "upgrade", "--", "stray"], 2),
        (["-n", "create", "-e", "upgrade", "pve-9", "--", "stray"], 2),
    ],
)
def test_rejected_input_one_line_nonzero_no_change(
    tmp_path: Path, argv: list[str], code: int
) -> None:
    rc, _out, err, runner = run(tmp_path, *argv)
    assert rc == code
    assert err.count("\n") == 1 and err.startswith("beadm: ")
    assert runner.changes == []


def test_main_leaves_the_loggers_propagation_as_it_was(tmp_path: Path) -> None:
    """Issue 24: main() must not leave 'beadm' cut off from the root logger."""
    import logging

    log = logging.getLogger("beadm")
    assert log.propagate
    run(tmp_path, "version")
    run(tmp_path, "list")
    assert log.propagate


def test_double_dash_still_ends_options(tmp_path: Path) -> None:
    rc, out, err, runner = run(tmp_path, "-n", "create", "--", "pve-9")
    assert (rc, err) == (0, ""), err
    assert any("pve-9" in " ".join(c) for c in runner.changes) or "pve-9" in out


def test_not_root(tmp_path: Path) -> None:
    rc, _, err, _ = run(tmp_path, "list", euid=1000)
    assert rc == 7 and err == "beadm: must be run as root\n"


def test_dry_run_prints_and_changes_nothing(tmp_path: Path) -> None:
    rc, out, err, runner = run(tmp_path, "-n", "create", "pve-3")
    assert rc == 0, err
    assert runner.changes == []
    assert "would run: zfs snapshot -r -o org.beadm:state=creating rpool/ROOT/pve-1@beadm-" in out
    assert "would run: zfs clone" in out
    rc, out, err, runner = run(tmp_path, "--dry-run", "destroy", "pve-2")
    assert rc == 0, err
    assert runner.changes == []
    assert "would run: zfs destroy -r rpool/ROOT/pve-2" in out


def test_destroy_asks_on_a_terminal(tmp_path: Path) -> None:
    rc, out, err, runner = run(tmp_path, "destroy", "pve-2", stdin=Tty("n\n"))
    assert rc == 5 and runner.changes == []
    assert "Destroy BE pve-2" in out
    rc, out, err, runner = run(tmp_path, "destroy", "pve-2", stdin=Tty("y\n"))
    assert rc == 0, err
    assert ("zfs", "destroy", "-r", "rpool/ROOT/pve-2") in runner.changes


def test_list_table_script_json(tmp_path: Path) -> None:
    _, out, _, _ = run(tmp_path, "list")
    lines = out.splitlines()
    assert lines[0].split() == ["BE", "Active", "Mountpoint", "Space", "Created", "Description"]
    assert lines[1].split()[:4] == ["pve-1", "NR", "/", "2.00G"]
    assert lines[2].split()[:3] == ["pve-2", "-", "-"]
    assert lines[2].endswith("before upgrade")
    _, out, _, _ = run(tmp_path, "list", "-H", "-K", "name")
    assert out.splitlines()[0].split("\t")[:2] == ["pve-2", "-"]
    _, out, _, _ = run(tmp_path, "list", "-s")
    assert "  rpool/ROOT/pve-1@manual" in out
    _, out, _, _ = run(tmp_path, "list", "-a")
    assert "  rpool/ROOT/pve-1/var" in out
    _rc, out, _, _ = run(tmp_path, "list", "--json")
    data = json.loads(out)
    assert data["root"] == "rpool/ROOT"
    assert [b["active"] for b in data["bes"]] == ["NR", "-"]
    assert data["bes"][1]["origin"] == "rpool/ROOT/pve-1@beadm-20261120-101010"


def test_list_shows_the_running_bes_kernel_pin(tmp_path: Path) -> None:
    """Issue 11.4: a ``proxmox-boot-tool kernel pin`` in the running BE is shown by list (a
    note on stderr: the table's columns stay beadm's/bectl's) and carried by --json."""
    state = BootState(next_boot="pve-1", pins=(KernelPin("pve-1", "6.8.12-4-pve", True, True),))
    rc, out, err, _ = run(tmp_path, "list", state=state)
    assert rc == 0
    assert "beadm: note: BE pve-1 boots kernel 6.8.12-4-pve: pinned for the next boot only" in err
    assert "6.8.12-4-pve" not in out
    _rc, out, _, _ = run(tmp_path, "list", "--json", state=state)
    bes = json.loads(out)["bes"]
    assert bes[0]["kernel_pin"] == {"kver": "6.8.12-4-pve", "next_boot_only": True,
                                    "present": True}
    assert bes[1]["kernel_pin"] is None
    _rc, out, err, _ = run(tmp_path, "list", state=BootState(next_boot="pve-1"))
    assert "note" not in err


def test_list_reads_snapshots_only_when_it_shows_them(tmp_path: Path) -> None:
    """Plain ``list`` (and -D, -H) asks zfs for filesystems only, with the same space figures;
    -s, -a and --json ask for snapshots too. One ``zfs list`` call either way."""
    shown = {}
    for flags, want in (((), "filesystem"), (("-D",), "filesystem"), (("-H",), "filesystem"),
                        (("-s",), "filesystem,snapshot"), (("-a",), "filesystem,snapshot"),
                        (("--json",), "filesystem,snapshot")):
        rc, out, _, r = run(tmp_path, "list", *flags)
        assert rc == 0
        lists = [c for c in r.calls if c[:2] == ("zfs", "list")]
        assert [c[c.index("-t") + 1] for c in lists] == [want], flags
        shown[flags] = out
    assert "@" not in shown[()]
    be_rows = [line.split() for line in shown[("-s",)].splitlines()[1:]
               if not line.startswith(" ")]
    assert be_rows == [line.split() for line in shown[()].splitlines()[1:]]
    assert len(be_rows) == 2


def test_human() -> None:
    assert human(0) == "0B"
    assert human(1536) == "1.50K"
    assert human(2147483648) == "2.00G"
    assert human(123 * 1024**2) == "123M"


def test_list_survives_odd_descriptions_set_by_hand(tmp_path: Path) -> None:
    """Descriptions set with `zfs set` (or an older beadm): line-breaking characters,
    a newline, bytes that are not UTF-8. list prints one escaped line per BE."""
    odd = LIST_TEXT.replace("before upgrade", "a\x0bb\x1cc\x85d\u2028e\nf\udcffg")
    rc, out, err, _ = run(tmp_path, "list", "-H", listing=odd)
    assert rc == 0, err
    rows = out.splitlines()
    assert [r.split("\t")[0] for r in rows] == ["pve-1", "pve-2"]
    assert rows[1].endswith("\t" + "a\\x0bb\\x1cc\\x85d\\u2028e\\x0af\\xffg")
    rc, out, err, _ = run(tmp_path, "list", "--json", listing=odd)
    assert rc == 0, err
    assert json.loads(out)["bes"][1]["description"] == "a\x0bb\x1cc\x85d\u2028e\nf\udcffg"


def test_command_error_with_undecodable_stderr_is_one_line(tmp_path: Path) -> None:
    def make_runner(dry: bool, out: object = None) -> FakeRunner:
        r = FakeRunner(dry_run=dry)
        r.on(*LIST_FS_ARGV, returncode=1, stderr="cannot open \udcff\x85x\u2028y: no\n")
        return r

    err = io.StringIO()
    deps = Deps(make_runner=make_runner, make_backend=lambda n, r: RecordingBackend(),  # type: ignore[arg-type,return-value]
                mountinfo=tmp_path / "mi", lock_path=tmp_path / "lock", euid=lambda: 0,
                stdout=io.StringIO(), stderr=err)  # fmt: skip
    (tmp_path / "mi").write_text(MOUNTINFO)
    assert main(["list"], deps=deps) == 9
    assert err.getvalue().count("\n") == 1
    err.getvalue().encode("utf-8")  # printable on any UTF-8 terminal


def test_unexpected_error_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    class Broken(RecordingBackend):
        def sync(self, bes: list[object], *, only_if_used: bool = False) -> tuple[str, ...]:
            raise RuntimeError("bug\nsecond line")

    rc, _out, err = _list_with_backend(tmp_path, Broken())
    assert rc == 1
    assert err == "beadm: internal error: RuntimeError: bug\\x0asecond line\n"


def _list_with_backend(tmp_path: Path, backend: object) -> tuple[int, str, str]:
    def make_runner(dry: bool, out: object = None) -> FakeRunner:
        r = FakeRunner(dry_run=dry)
        r.on(*LIST_ARGV, stdout=LIST_TEXT)
        r.on("zpool", "get", stdout=pool_props("rpool/ROOT/pve-1"))
        return r

    (tmp_path / "mi").write_text(MOUNTINFO)
    out, err = io.StringIO(), io.StringIO()
    deps = Deps(make_runner=make_runner, make_backend=lambda n, r: backend,  # type: ignore[arg-type,return-value]
                mountinfo=tmp_path / "mi", lock_path=tmp_path / "lock", euid=lambda: 0,
                stdout=out, stderr=err)  # fmt: skip
    return main(["sync"], deps=deps), out.getvalue(), err.getvalue()


def _pve_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The running BE's files, with Proxmox state inside it."""
    from beadm import pvestate

    root = tmp_path / "root"
    (root / "var/lib/vz/dump").mkdir(parents=True)
    (root / "var/lib/pve-cluster").mkdir(parents=True)
    monkeypatch.setattr(pvestate, "ROOT_DIR", str(root))
    return root


def test_init_says_in_one_line_that_state_is_inside_the_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pve_root(tmp_path, monkeypatch)
    rc, _, err, runner = run(tmp_path, "init")
    assert rc == 0
    assert err == ("beadm: note: /var/lib/vz, /var/lib/pve-cluster would go back in time with "
                   "the BE; 'beadm init --shared-state' moves them to datasets all BEs share\n")
    assert runner.changes == []


def test_init_shared_state_dry_run_prints_the_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _pve_root(tmp_path, monkeypatch)
    rc, out, err, runner = run(tmp_path, "-n", "init", "--shared-state")
    assert (rc, err, runner.changes) == (0, "", [])
    assert ("would run: zfs create -o canmount=noauto -o mountpoint=/var/lib/vz "
            "-o org.beadm:state=moving rpool/var-lib-vz") in out.splitlines()
    assert f"would copy {root}/var/lib/pve-cluster" not in out  # no database there
    assert "would run: zfs set canmount=on rpool/var-lib-pve-cluster" in out.splitlines()
    assert not (root / "etc").exists()



class _CopyingBackend(RecordingBackend):
    """post_create reports a long step on the progress logger, as the ESP store does."""

    def post_create(self, be: object) -> tuple[str, ...]:
        logging.getLogger("beadm.progress").info("copying vmlinuz-6.8 (12.0 MiB) to ESP A")
        return super().post_create(be)


def test_a_long_steps_progress_is_shown_on_a_terminal_only(tmp_path: Path) -> None:
    """Issue 25.8: a create's copies to the ESPs say what they do on a terminal; piped
    (scripts, the lab) stderr stays as it was, and the logger is left as it was found."""
    before = logging.getLogger("beadm.progress").level
    rc, _out, err, _r = run(tmp_path, "create", "pve-3", backend=_CopyingBackend(), tty=True)
    assert (rc, err) == (0, "beadm: copying vmlinuz-6.8 (12.0 MiB) to ESP A\n")
    rc, _out, err, _r = run(tmp_path, "create", "pve-4", backend=_CopyingBackend())
    assert (rc, err) == (0, "")
    assert logging.getLogger("beadm.progress").level == before
