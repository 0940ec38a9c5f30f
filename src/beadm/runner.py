"""The one way beadm runs external commands.

Every command is an argv list (never a shell string), runs with ``LANG=C.UTF-8`` and
stdin from /dev/null, is logged with ``shlex.join`` at debug level, and a failure raises
:class:`beadm.errors.CommandError` carrying the command's stderr.

The runner is passed in (constructor injection) to every layer that runs commands, so
unit tests hand in a fake that records argv sequences, and ``--dry-run`` is a runner that
prints changing commands instead of running them. Queries pass ``readonly=True`` and run
even in dry-run mode, so a dry run shows the real plan.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Protocol, TextIO

from beadm.errors import CommandError, UnsupportedError
from beadm.record import record

log = logging.getLogger(__name__)


@record
class Result:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs one external command. Implementations: :class:`SubprocessRunner`, test fakes."""

    @property
    def dry_run(self) -> bool:
        """True when changing commands (and file writes) must be shown, not done."""
        ...

    def run(self, argv: Sequence[str], *, readonly: bool = False, check: bool = True) -> Result:
        """Run ``argv``. ``readonly`` commands run even in dry-run mode.

        With ``check`` a non-zero exit raises :class:`CommandError`.
        """
        ...


#: Set for every command beadm runs: a kernel hook (``zzz-beadm`` -> ``beadm sync
#: --if-used``) started under a beadm command (``proxmox-boot-tool refresh``, run by
#: ``destroy``/``rename``) must not wait for the lock its own ancestor holds.
UNDER_BEADM = "BEADM_PARENT_PID"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env[UNDER_BEADM] = str(os.getpid())
    env["LANG"] = "C.UTF-8"
    env["LC_ALL"] = "C.UTF-8"
    env.pop("LANGUAGE", None)
    return env


class SubprocessRunner:
    """Runs commands with :mod:`subprocess`; in dry-run mode prints changing ones instead."""

    def __init__(self, *, dry_run: bool = False, out: TextIO | None = None) -> None:
        self._dry_run = dry_run
        self._out = out if out is not None else sys.stdout

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    def run(self, argv: Sequence[str], *, readonly: bool = False, check: bool = True) -> Result:
        import shlex
        import subprocess  # here: --help and a usage error run no command (issue 15)

        args = tuple(argv)
        if not args or not all(isinstance(a, str) for a in args):
            raise TypeError(f"argv must be a non-empty sequence of str, got {argv!r}")
        if self._dry_run and not readonly:
            print(f"would run: {shlex.join(args)}", file=self._out)
            return Result(args, 0, "", "")
        log.debug("run: %s", shlex.join(args))
        start = time.monotonic()
        try:
            proc = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                # Output is not always UTF-8 (a property value set by hand): undecodable
                # bytes become lone surrogates, which go back out as the same bytes when
                # passed on as an argument. The CLI escapes them when printing.
                encoding="utf-8",
                errors="surrogateescape",
                env=_child_env(),
                check=False,
            )
        except FileNotFoundError as exc:
            raise UnsupportedError(f"{args[0]}: command not found") from exc
        # the timing log every profile reads (beadm -v; bench/speed.py sums it per command)
        log.debug("took %.3fs: %s", time.monotonic() - start, shlex.join(args))
        result = Result(args, proc.returncode, proc.stdout, proc.stderr)
        if proc.returncode != 0:
            log.debug("exit %d: %s", proc.returncode, proc.stderr.strip())
            if check:
                raise CommandError(list(args), proc.returncode, proc.stderr)
        return result
