"""Issue 25 items 5 and 6: the global options before and after every command, list's
-p and -o, --json's output_version, beadm --version."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from test_cli import run

from beadm.cli import build_parser
from beadm.cli.parser import ALIASES

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
