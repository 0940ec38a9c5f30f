"""Issue 25 item 8: the runner shows a command's output as it comes (``on_line``), not
only once the command has ended; the result still has all of it."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest

from beadm.errors import CommandError
from beadm.runner import SubprocessRunner


def _collect() -> tuple[list[tuple[float, str]], Callable[[str], None]]:
    seen: list[tuple[float, str]] = []

    def on_line(line: str) -> None:
        seen.append((time.monotonic(), line))

    return seen, on_line


def test_lines_arrive_while_the_command_runs() -> None:
    seen, on_line = _collect()
    start = time.monotonic()
    res = SubprocessRunner().run(
        ["sh", "-c", "echo one; echo two >&2; sleep 1; echo three"],
        on_line=on_line)
    end = time.monotonic()
    assert sorted(line for _, line in seen) == ["one", "three", "two"]
    assert seen[-1][1] == "three"
    first = min(t for t, line in seen if line in ("one", "two"))
    # one and two were shown a second before the command ended, not when it ended
    assert first - start < 0.8 and end - first > 0.5, (start, seen, end)
    assert (res.returncode, res.stdout, res.stderr) == (0, "one\nthree\n", "two\n")


def test_a_last_line_without_newline_and_bytes_that_are_not_utf8() -> None:
    seen, on_line = _collect()
    res = SubprocessRunner().run(["printf", "a\\nb\\377c"], on_line=on_line)
    assert [line for _, line in seen] == ["a", "b\udcffc"]
    assert res.stdout == "a\nb\udcffc"


def test_a_failing_streamed_command_raises_with_its_stderr() -> None:
    seen, on_line = _collect()
    with pytest.raises(CommandError) as e:
        SubprocessRunner().run(["sh", "-c", "echo out; echo 'E: broken' >&2; exit 100"],
                               on_line=on_line)
    assert e.value.returncode == 100 and e.value.stderr == "E: broken\n"
    assert sorted(line for _, line in seen) == ["E: broken", "out"]
    res = SubprocessRunner().run(["sh", "-c", "exit 3"], check=False,
                                 on_line=on_line)
    assert res.returncode == 3


def test_dry_run_prints_the_argv_and_streams_nothing() -> None:
    seen, on_line = _collect()
    out = io.StringIO()
    res = SubprocessRunner(dry_run=True, out=out).run(["apt-get", "full-upgrade", "-y"],
                                                      on_line=on_line)
    assert out.getvalue() == "would run: apt-get full-upgrade -y\n"
    assert seen == [] and res.returncode == 0
