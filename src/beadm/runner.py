"""The one way beadm runs external commands.

Every command is an argv list (never a shell string), runs with ``LANG=C.UTF-8`` and
stdin from /dev/null, is logged with ``shlex.join`` at debug level, and a failure raises
:class:`beadm.errors.CommandError` carrying the command's stderr.

The runner is passed in (constructor injection) to every layer that runs commands, so
unit tests hand in a fake that records argv sequences, and ``--dry-run`` is a runner that
prints changing commands instead of running them. Queries pass ``readonly=True`` and run
even in dry-run mode, so a dry run shows the real plan.

A long command whose output the user should see as it comes (apt in ``beadm upgrade``)
passes ``on_line``: each line of its stdout and stderr is handed to it as soon as it is
read; the result still carries both in full.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TextIO

from beadm.errors import CommandError, UnsupportedError
from beadm.record import record

if TYPE_CHECKING:
    import subprocess

log = logging.getLogger(__name__)


@record
class Result:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


#: What gets a running command's output, one line at a time.
LineSink = Callable[[str], None]


class Runner(Protocol):
    """Runs one external command. Implementations: :class:`SubprocessRunner`, test fakes."""

    @property
    def dry_run(self) -> bool:
        """True when changing commands (and file writes) must be shown, not done."""
        ...

    def run(self, argv: Sequence[str], *, readonly: bool = False, check: bool = True,
            on_line: LineSink | None = None) -> Result:
        """Run ``argv``. ``readonly`` commands run even in dry-run mode.

        With ``check`` a non-zero exit raises :class:`CommandError`. ``on_line`` gets each
        line of the output (stdout and stderr, without the newline) as it comes; a dry
        run that does not run the command calls it for nothing.
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

    def run(self, argv: Sequence[str], *, readonly: bool = False, check: bool = True,
            on_line: LineSink | None = None) -> Result:
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
            if on_line is None:
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
                returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
            else:
                returncode, stdout, stderr = _streamed(args, on_line)
        except FileNotFoundError as exc:
            raise UnsupportedError(f"{args[0]}: command not found") from exc
        # the timing log every profile reads (beadm -v; bench/speed.py sums it per command)
        log.debug("took %.3fs: %s", time.monotonic() - start, shlex.join(args))
        result = Result(args, returncode, stdout, stderr)
        if returncode != 0:
            log.debug("exit %d: %s", returncode, stderr.strip())
            if check:
                raise CommandError(list(args), returncode, stderr)
        return result


def _streamed(args: tuple[str, ...], on_line: LineSink) -> tuple[int, str, str]:
    """Run ``args`` as :meth:`SubprocessRunner.run` does, handing each line of stdout and
    stderr to ``on_line`` as soon as it is read (both pipes watched at once, so neither
    fills up); its exit status and its whole stdout and stderr."""
    import subprocess

    def text(data: bytes) -> str:
        return data.decode("utf-8", errors="surrogateescape")

    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=_child_env()) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        kept: dict[int, bytearray] = {proc.stdout.fileno(): bytearray(),
                                      proc.stderr.fileno(): bytearray()}
        partial = {fd: bytearray() for fd in kept}
        try:
            _pump(proc, kept, partial, on_line)
        except BaseException:
            proc.kill()  # as subprocess.run does (an interrupt, a failing on_line)
            raise
        returncode = proc.wait()
        return (returncode, text(bytes(kept[proc.stdout.fileno()])),
                text(bytes(kept[proc.stderr.fileno()])))


def _pump(proc: subprocess.Popen[bytes], kept: dict[int, bytearray],
          partial: dict[int, bytearray], on_line: LineSink) -> None:
    """Read both pipes of ``proc`` to their ends: every byte into ``kept``, each line
    to ``on_line`` once it is whole (a last one without newline at the end)."""
    import selectors

    def text(data: bytes) -> str:
        return data.decode("utf-8", errors="surrogateescape")

    assert proc.stdout is not None and proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        for stream in (proc.stdout, proc.stderr):
            sel.register(stream.fileno(), selectors.EVENT_READ)
        while sel.get_map():
            for key, _ in sel.select():
                fd = int(key.fd)
                data = os.read(fd, 65536)
                if not data:
                    sel.unregister(fd)
                    if partial[fd]:
                        on_line(text(bytes(partial[fd])))
                    continue
                kept[fd] += data
                partial[fd] += data
                *lines, rest = bytes(partial[fd]).split(b"\n")
                partial[fd] = bytearray(rest)
                for line in lines:
                    on_line(text(line))
