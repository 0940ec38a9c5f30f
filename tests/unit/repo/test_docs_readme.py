"""The README is a guide for an administrator; HACKING.md is the developers' page.

Checks what a reader notices first: the README's prose lines fit 100 columns, it speaks of
no issue numbers, test files or dates (those belong to HACKING.md and the log), it shows
``./demo`` and ``./run-tests`` at the top and points to HACKING.md, the rollback warning
comes before the first ``beadm activate`` the reader is told to run, and every beadm
command line in its code blocks is one that beadm's parser accepts.
"""

from __future__ import annotations

import re
import shlex

from beadm import cli
from beadm.errors import UsageError
from worlds import REPO

ROOT = REPO
README = ROOT / "README.md"
HACKING = ROOT / "HACKING.md"


def _split(text: str) -> tuple[list[str], list[str]]:
    """(prose lines, code lines) of a Markdown file: code is inside ``` fences."""
    prose: list[str] = []
    code: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        (code if inside else prose).append(line)
    assert not inside, "an unclosed ``` fence"
    return prose, code


def test_readme_prose_lines_fit_100_columns() -> None:
    prose, _ = _split(README.read_text(encoding="utf-8"))
    long = [line for line in prose if len(line) > 100]
    assert not long, f"README.md has {len(long)} prose lines over 100 characters: {long[:3]}"


def test_readme_speaks_of_no_issue_test_file_or_date() -> None:
    """Anywhere: issue numbers and test files; in the prose: dates and measurements (the
    captured session's output keeps its real dates)."""
    text = README.read_text(encoding="utf-8")
    prose = "\n".join(_split(text)[0])
    months = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
    for where, pattern, what in (
        (text, r"(?i)\bissue\s+#?\d+", "an issue number"),
        (text, r"\btests?/(unit|lab|boot)\b|\btest_\w+\.py\b", "a test file"),
        (prose, rf"\b\d{{1,2}}\s+({months})[a-z]*\s+20\d\d\b|\b20\d\d-\d\d-\d\d\b", "a date"),
        (prose, r"(?i)\bmeasured\b", "a measurement (lab timings go to HACKING.md)"),
    ):
        found = re.search(pattern, where)
        assert found is None, f"README.md names {what}: {found.group(0)!r}"


def test_readme_starts_with_demo_and_run_tests_and_points_to_hacking() -> None:
    head = "\n".join(README.read_text(encoding="utf-8").splitlines()[:30])
    for word in ("./demo", "./run-tests", "HACKING.md"):
        assert word in head, f"the README's first 30 lines lack {word}"
    assert HACKING.exists(), "HACKING.md is missing"
    _, code = _split(HACKING.read_text(encoding="utf-8"))
    first = "\n".join(code[:4])
    assert "./demo" in first and "./run-tests" in first, (
        "HACKING.md's first code block should be ./demo and ./run-tests"
    )


def test_rollback_warning_comes_before_the_first_activate() -> None:
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^(?:[#$] )?beadm activate", text, flags=re.MULTILINE)
    assert first is not None, "the README never tells the reader to run beadm activate"
    before = text[: first.start()]
    warning = r"(?is)guests?\b[^.]*\bback in time|back in time\b[^.]*\bguests?\b"
    assert re.search(warning, before), (
        "the README's first 'beadm activate' comes before the warning that guests must not go "
        "back in time"
    )


def _command_lines(code: list[str]) -> list[str]:
    found = []
    for line in code:
        line = re.sub(r"^\s*[$#]\s+", "", line.strip())
        line = re.sub(r"\s+#\s.*$", "", line)  # a trailing comment
        for part in re.split(r"&&|;|\|", line):
            part = part.strip()
            if part.startswith("beadm ") and "..." not in part:
                found.append(part)
    return found


def test_every_beadm_command_in_the_readme_parses() -> None:
    _, code = _split(README.read_text(encoding="utf-8"))
    lines = _command_lines(code)
    assert len(lines) >= 8, f"too few beadm command lines found in README.md: {lines}"
    bad = {}
    for line in lines:
        try:
            cli._parse(shlex.split(line)[1:])
        except UsageError as e:
            bad[line] = str(e)
    assert not bad, f"README.md shows command lines beadm refuses: {bad}"
