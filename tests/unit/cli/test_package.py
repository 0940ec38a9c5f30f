"""The CLI package's structure: every command the parser knows has exactly one handler in
the command tables, the manager is made in one place, and what only one command needs
is not imported with the CLI (start-up time, issue 15)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from beadm import cli
from beadm.cli import apthook, commands, deps
from worlds import REPO

SRC = REPO / "src"


def _words() -> set[str]:
    """Every command word the parser accepts (names and aliases)."""
    sub = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(sub) == 1
    return set(sub[0].choices)


def test_every_command_word_has_one_handler_and_every_handler_a_command() -> None:
    words = _words()
    assert "unmount" in words and commands.command("unmount") == "umount"
    handled = set(commands.COMMANDS) | set(commands.WITHOUT_MANAGER)
    assert not set(commands.COMMANDS) & set(commands.WITHOUT_MANAGER)
    assert {commands.command(w) for w in words} == handled
    assert commands.BOOT_CHANGING.issubset(commands.COMMANDS)


def test_the_apt_hook_and_the_commands_share_one_manager_builder() -> None:
    assert apthook.build_manager is deps.build_manager
    assert cli.build_manager is deps.build_manager
    assert "BeManager(" not in Path(apthook.__file__).read_text(encoding="utf-8")
    assert "BeManager(" not in Path(cli.__file__).read_text(encoding="utf-8")


def test_importing_the_cli_leaves_out_what_one_command_needs() -> None:
    lazy = ("beadm.cli.apthook", "beadm.aptinfo", "beadm.health", "json")
    code = ("import sys; import beadm.cli; "
            f"print(sorted(m for m in {lazy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, "
                          f"{str(SRC)!r}); {code}"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
