"""The ``beadm`` command line: parses arguments, calls :mod:`beadm.be`, prints results.

It never runs ``zfs`` itself. Every error below it is a :class:`beadm.errors.BeadmError`,
mapped here, in :func:`main`, to one line ``beadm: <message>`` on stderr and its exit code.

``parser`` is the command line (argparse), ``commands`` each command (a table of
functions), ``output`` what they print, ``deps`` what they talk to and the one place a
:class:`beadm.be.BeManager` is made, ``apthook`` apt's hook.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import TextIO

# Only what every command needs is imported here; a module one command needs (json,
# apt's hook input, the health checks, the retention policy, ...) is imported where
# that command runs: start-up time is most of a short command's time (issue 15).
from beadm.cli import commands
from beadm.cli.commands import BOOT_CHANGING
from beadm.cli.deps import Deps, build_manager
from beadm.cli.output import human, shown
from beadm.cli.parser import (
    LIST_JSON_SCHEMA,
    PRUNE_JSON_SCHEMA,
    SORT_KEYS,
    UPGRADE_JSON_SCHEMA,
    build_parser,
)
from beadm.errors import BeadmError, InterruptedByUser, RefusedError, UnsupportedError, UsageError

__all__ = [
    "BOOT_CHANGING",
    "LIST_JSON_SCHEMA",
    "PRUNE_JSON_SCHEMA",
    "SORT_KEYS",
    "UPGRADE_JSON_SCHEMA",
    "Deps",
    "build_manager",
    "build_parser",
    "human",
    "main",
    "shown",
]

log = logging.getLogger("beadm")


def main(argv: list[str] | None = None, *, deps: Deps | None = None) -> int:
    """Run beadm; return the exit status (errors mapped here, one line each)."""
    deps = deps if deps is not None else Deps()
    out = deps.stdout if deps.stdout is not None else sys.stdout
    err = deps.stderr if deps.stderr is not None else sys.stderr
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("beadm: %(message)s"))
    root_log = logging.getLogger("beadm")
    root_log.addHandler(handler)
    propagate, root_log.propagate = root_log.propagate, False
    progress = logging.getLogger("beadm.progress")  # long steps: a kernel to an ESP, ...
    progress_level = progress.level
    try:
        try:
            args = _parse(list(sys.argv[1:] if argv is None else argv))
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else 0
        root_log.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
        if _is_terminal(err) and not getattr(args, "quiet", False):
            progress.setLevel(logging.INFO)  # on a terminal: what a long step is doing
        if args.dry_run and getattr(args, "json", False):
            # a dry run's plan ("would ...", also a backend's) on stderr: stdout is the JSON
            with contextlib.redirect_stdout(err):
                return _dispatch(args, deps, out, err, plan=err)
        return _dispatch(args, deps, out, err)
    except BeadmError as exc:
        print(f"beadm: {shown(' '.join(exc.message.split()))}", file=err)
        return exc.exit_code
    except OSError as exc:
        print(f"beadm: {shown(str(exc))}", file=err)
        return 1
    except KeyboardInterrupt:
        stop = InterruptedByUser("interrupted")
        print(f"beadm: {stop.message}", file=err)
        return stop.exit_code
    except Exception as exc:  # a bug: still one line, never a traceback (-v logs it)
        log.debug("internal error", exc_info=True)
        print(f"beadm: internal error: {type(exc).__name__}: {shown(str(exc))}", file=err)
        return 1
    finally:
        root_log.removeHandler(handler)
        root_log.propagate = propagate
        progress.setLevel(progress_level)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: no terminal
        return False


def _parse(words: list[str]) -> argparse.Namespace:
    """The arguments; for ``upgrade`` only, what follows the first ``--`` is apt's. The
    command is known only once parsed (a BE may be named "upgrade"): the words before the
    ``--`` are parsed first, and for any other command the whole line is parsed again, so
    that ``--`` ends the options as usual and a stray word after it is a usage error."""
    parser = build_parser()
    if "--" in words:
        cut = words.index("--")
        try:
            head = parser.parse_known_args(words[:cut])[0]
        except UsageError:
            head = None  # not a whole upgrade command line: the full parse says why
        if head is not None and head.command == "upgrade":
            args = parser.parse_args(words[:cut])
            args.apt_args = words[cut + 1 :]
            return args
    args = parser.parse_args(words)
    args.apt_args = []
    return args


def _dispatch(args: argparse.Namespace, deps: Deps, out: TextIO, err: TextIO, *,
              plan: TextIO | None = None) -> int:
    name = commands.command(args.command)
    plain = commands.WITHOUT_MANAGER.get(name)
    if plain is not None:
        return plain(args, deps, out, err)
    if deps.euid() != 0:
        raise UnsupportedError("must be run as root")
    if args.command in BOOT_CHANGING and "@" not in str(getattr(args, "name", "") or "") \
            and deps.in_chroot():
        if args.command == "sync" and args.only_if_used:
            print("beadm: in a chroot: boot entries are not touched from here (the beadm "
                  "outside, e.g. 'beadm upgrade', writes them)", file=err)
            return 0
        raise RefusedError(f"{args.command}: refused in a chroot (/ is not init's root): it "
                           "changes what boots; run it outside the chroot")
    mgr = build_manager(args, deps, out, err, plan=plan)
    return commands.COMMANDS[name](mgr, args, deps, out, err)
