"""Test doubles: a Runner that records argv lists and answers from canned output.

``FakeRunner.on(prefix..., stdout=...)`` registers an answer for every argv starting with
``prefix`` (the longest registered prefix wins); unregistered commands succeed with no
output. ``calls`` holds every argv as a tuple; ``changes`` only those not run readonly.
In dry-run mode changing commands are printed (``would run: ...``) and not recorded as
changes, like the real runner.
"""

from __future__ import annotations

import contextlib
import io
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from beadm.errors import CommandError
from beadm.runner import Result


@dataclass
class Answer:
    stdout: str = ""
    returncode: int = 0
    stderr: str = ""
    hook: Callable[[tuple[str, ...]], None] | None = None


def pool_props(bootfs: str = "-", altroot: str = "-") -> str:
    """What ``zpool get -H -p -o property,value bootfs,altroot POOL`` prints."""
    return f"bootfs\t{bootfs}\naltroot\t{altroot}\n"


class FakeRunner:
    def __init__(self, *, dry_run: bool = False) -> None:
        self._dry_run = dry_run
        self._answers: dict[tuple[str, ...], Answer] = {}
        self.calls: list[tuple[str, ...]] = []
        self.changes: list[tuple[str, ...]] = []
        self.out = io.StringIO()

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    def on(
        self,
        *prefix: str,
        stdout: str = "",
        returncode: int = 0,
        stderr: str = "",
        hook: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        self._answers[tuple(prefix)] = Answer(stdout, returncode, stderr, hook)

    def fail(self, *prefix: str, stderr: str = "boom") -> None:
        self.on(*prefix, returncode=1, stderr=stderr)

    def run(self, argv: Sequence[str], *, readonly: bool = False, check: bool = True,
            on_line: Callable[[str], None] | None = None) -> Result:
        args = tuple(argv)
        self.calls.append(args)
        if self._dry_run and not readonly:
            print(f"would run: {shlex.join(args)}", file=self.out)
            return Result(args, 0, "", "")
        if not readonly:
            self.changes.append(args)
        best: Answer | None = None
        best_len = -1
        for prefix, ans in self._answers.items():
            if args[: len(prefix)] == prefix and len(prefix) > best_len:
                best, best_len = ans, len(prefix)
        ans = best if best is not None else Answer()
        if ans.hook is not None:
            ans.hook(args)
        for line in (ans.stdout + ans.stderr).splitlines() if on_line is not None else []:
            on_line(line)  # as the runner streams them: each line of the output
        if ans.returncode != 0 and check:
            raise CommandError(list(args), ans.returncode, ans.stderr)
        return Result(args, ans.returncode, ans.stdout, ans.stderr)


class RecordingBackend:
    """A boot backend that records hook calls; ``state`` is what boot_state returns."""

    name = "recording"

    def __init__(self, state: object = None, fail_on: str | None = None, *,
                 trials: bool = True) -> None:
        from beadm.backend import BootState

        self.state = state if state is not None else BootState()
        self.fail_on = fail_on
        self._trials = trials
        self.held = 0
        self.calls: list[tuple[object, ...]] = []

    def _hook(self, *call: object) -> tuple[str, ...]:
        """Record the call; no warnings (what a changing hook returns)."""
        self.calls.append(call)
        if call[0] == self.fail_on:
            from beadm.errors import BootError

            raise BootError(f"{call[0]} failed")
        return ()

    def boot_state(self, bes: list[object]) -> object:
        return self.state

    def trials(self) -> bool:
        return self._trials

    # -- the rest of the declared contract (beadm.backend.BootBackend): nothing held, no
    # ESP of its own, no pending trial

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Counts open holds (``held``): ``beadm.be`` holds the session while it has the
        lock (the private namespace, the ESPs mounted)."""
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1

    def release(self) -> None:
        return None

    def be_view(self, be: object, *, writable: bool) -> Path | None:
        return None

    def esp_usage(self, bes: list[object]) -> object:
        return None

    def migrate(self, bes: list[object]) -> None:
        from beadm.errors import UnsupportedError

        raise UnsupportedError(f"backend {self.name} has nothing to migrate")

    def end_trial(self, bes: list[object]) -> tuple[str, ...]:
        return self._hook("end_trial")

    def trial_state(self, bes: list[object]) -> object:
        return None

    def booted_trial(self) -> bool:
        return False

    def preflight(self) -> None:
        """Not recorded (every boot-changing command calls it)."""

    def check_rename(self, old: object, new: object) -> None:
        """Not recorded (tests of it subclass)."""

    def init(self, be: object) -> tuple[str, ...]:
        return self._hook("init", be)

    def post_create(self, be: object) -> tuple[str, ...]:
        return self._hook("post_create", be)

    def activate(self, be: object, *, temporary: bool) -> tuple[str, ...]:
        return self._hook("activate", be, temporary)

    def activate_trial(self, be: object, fallback: object, tries: int,
                       watchdog: int = 600) -> tuple[str, ...]:
        return self._hook("activate_trial", be, fallback, tries, watchdog)

    def post_rename(self, old: object, new: object) -> tuple[str, ...]:
        return self._hook("post_rename", old, new)

    def post_destroy(self, be: object) -> tuple[str, ...]:
        return self._hook("post_destroy", be)

    def check(self, bes: list[object]) -> object:
        from beadm.backend import Checked

        self._hook("check")
        return Checked()

    def sync(self, bes: list[object], *, only_if_used: bool = False) -> tuple[str, ...]:
        return self._hook("sync")


class WarningBackend(RecordingBackend):
    """Each changing hook call returns a warning of its own, numbered by the calls so far
    (``"activate #1"``)."""

    def _hook(self, *call: object) -> tuple[str, ...]:
        super()._hook(*call)
        return (f"{call[0]} #{len(self.calls)}",)
