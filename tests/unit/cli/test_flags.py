"""Issue 25 items 5 and 6: the global options before and after every command, list's
-p and -o, --json's output_version, beadm --version."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from beadm.cli import build_parser
from beadm.cli.parser import ALIASES
from worlds.cli import run

GLOBAL = {"-n": "dry_run", "-v": "verbose"}


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(set(sub.choices) - set(ALIASES))


#: the fewest words each command parses with (its positionals)
ARGS = {"create": ["x"], "destroy": ["x"], "rename": ["a", "b"], "mount": ["x"],
        "umount": ["x"], "activate": ["x"]}


@pytest.mark.parametrize("command", _commands())
@pytest.mark.parametrize(("flag", "dest"), GLOBAL.items())
def test_global_flags_before_and_after_every_command(command: str, flag: str,
                                                     dest: str) -> None:
    parser = build_parser()
    rest = ARGS.get(command, [])
    before = parser.parse_args([flag, command, *rest])
    after = parser.parse_args([command, flag, *rest])
    neither = parser.parse_args([command, *rest])
    assert getattr(before, dest) is True
    assert getattr(after, dest) is True, f"beadm {command} {flag}"
    assert getattr(neither, dest) is False


@pytest.mark.parametrize("command", _commands())
def test_root_and_backend_after_every_command(command: str) -> None:
    parser = build_parser()
    rest = ARGS.get(command, [])
    args = parser.parse_args([command, "--root", "tank/BE", "--backend", "none", *rest])
    assert (args.root, args.backend) == ("tank/BE", "none")
    args = parser.parse_args(["--root", "tank/BE", "--backend", "none", command, *rest])
    assert (args.root, args.backend) == ("tank/BE", "none")
    args = parser.parse_args([command, *rest])
    assert (args.root, args.backend) == (None, "auto")


def test_dry_run_after_the_command_runs_dry(tmp_path: Path) -> None:
    rc, out, err, runner = run(tmp_path, "create", "-n", "pve-3")
    assert (rc, err) == (0, "")
    assert "would run: zfs snapshot" in out
    assert runner.changes == []


# -- item 6: list -p, list -o, --json's output_version, --version ------------------------


def test_list_p_prints_exact_bytes_and_epoch_seconds(tmp_path: Path) -> None:
    rc, out, _, _ = run(tmp_path, "list", "-H", "-p")
    assert rc == 0
    assert out.splitlines()[0].split("\t")[:5] == ["pve-1", "NR", "/", "2147483648",
                                                   "1763200100"]
    rc, out, _, _ = run(tmp_path, "list", "-p")
    lines = out.splitlines()
    assert lines[0].split() == ["BE", "Active", "Mountpoint", "Space", "Created", "Description"]
    assert lines[1].split()[:5] == ["pve-1", "NR", "/", "2147483648", "1763200100"]
    # the dataset and snapshot rows too, and -D's space
    rc, out, _, _ = run(tmp_path, "list", "-H", "-p", "-a", "-D")
    rows = {r.split("\t")[0]: r.split("\t") for r in out.splitlines()}
    # 2G less the snapshots of pve-1 (100M) and of its var (50M)
    assert rows["pve-1"][3:5] == ["1990197248", "1763200100"]
    assert rows["rpool/ROOT/pve-1@manual"][3:5] == ["1048576", "1763300000"]
    assert rows["rpool/ROOT/pve-1/var"][4] == "1763200101"


def test_list_o_picks_columns_by_their_header_names(tmp_path: Path) -> None:
    rc, out, _, _ = run(tmp_path, "list", "-H", "-p", "-o", "space,BE,created")
    assert rc == 0
    assert out.splitlines()[0].split("\t") == ["2147483648", "pve-1", "1763200100"]
    rc, out, _, _ = run(tmp_path, "list", "-o", "be,ACTIVE")
    assert [ln.split() for ln in out.splitlines()] == [["BE", "Active"], ["pve-1", "NR"],
                                                       ["pve-2", "-"]]
    # with -s the first column's header is BE/Dataset/Snapshot: either name picks it
    rc, out, _, _ = run(tmp_path, "list", "-s", "-o", "be/dataset/snapshot")
    assert out.splitlines()[0] == "BE/Dataset/Snapshot"
    rc, out, _, _ = run(tmp_path, "list", "-s", "-H", "-o", "BE")
    assert "rpool/ROOT/pve-1@manual" in out.splitlines()


@pytest.mark.parametrize("argv", [["list", "-o", "Space,size"], ["list", "-o", ""],
                                  ["list", "-o", "be,,space"], ["list", "--json", "-o", "be"]])
def test_list_o_usage_errors_are_one_line(tmp_path: Path, argv: list[str]) -> None:
    rc, out, err, _ = run(tmp_path, *argv)
    assert (rc, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.startswith("beadm: "), err


def test_every_json_output_has_its_output_version(tmp_path: Path) -> None:
    import json

    rc, out, _, _ = run(tmp_path, "list", "--json")
    data = json.loads(out)
    assert rc == 0 and next(iter(data)) == "output_version"
    assert data["output_version"] == {"command": "beadm list", "vers_major": 1,
                                      "vers_minor": 0}


def test_version_option(capsys: pytest.CaptureFixture[str]) -> None:
    from beadm import __version__
    from beadm.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"beadm {__version__}\n"
