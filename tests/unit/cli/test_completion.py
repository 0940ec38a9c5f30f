"""completion/beadm, run in bash against a fake `beadm` that prints canned `list -H` output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from worlds import REPO

ROOT = REPO
COMPLETION = ROOT / "completion" / "beadm"
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")

FAKE_BEADM = r"""#!/bin/sh
case "$*" in
"list -H -s")
    printf 'pve-1\tNR\t/\t1G\t2026-01-01 10:00\t-\n'
    printf 'rpool/ROOT/pve-1@beadm-20260101-100000\t-\t-\t1M\t2026-01-01 10:00\t-\n'
    printf 'rpool/ROOT/pve-1@before\t-\t-\t1M\t2026-01-01 10:00\t-\n'
    printf 'rpool/ROOT/pve-1/var@before\t-\t-\t1M\t2026-01-01 10:00\t-\n'
    printf 'a.b\t-\t-\t1G\t2026-01-01 10:00\t-\n'
    printf 'rpool/ROOT/a.b@x\t-\t-\t1M\t2026-01-01 10:00\t-\n'
    printf 'axb\t-\t-\t1G\t2026-01-01 10:00\t-\n'
    ;;
"list -H")
    printf 'pve-1\tNR\t/\t1G\t2026-01-01 10:00\t-\n'
    printf 'a.b\t-\t-\t1G\t2026-01-01 10:00\t-\n'
    printf 'axb\t-\t-\t1G\t2026-01-01 10:00\t-\n'
    ;;
*) exit 1 ;;
esac
"""

# Splits a command line the way readline does for programmable completion (on
# blanks, and on those of @ : = that are in COMP_WORDBREAKS, which stay words of
# their own: bash's default has all three, bash-completion takes @ out), calls
# _beadm and prints COMPREPLY one per line.
HARNESS = r"""
[ "$USE_BC" = 1 ] && source /usr/share/bash-completion/bash_completion
source "$COMPLETION"
line=$1
COMP_LINE=$line
COMP_POINT=${#line}
COMP_WORDS=()
word=""
for ((i = 0; i < ${#line}; i++)); do
    c=${line:i:1}
    if [[ $c == " " ]]; then
        [[ -n $word ]] && COMP_WORDS+=("$word")
        word=""
    elif [[ $c == [@:=] && $COMP_WORDBREAKS == *"$c"* ]]; then
        [[ -n $word ]] && COMP_WORDS+=("$word")
        COMP_WORDS+=("$c")
        word=""
    else
        word+=$c
    fi
done
COMP_WORDS+=("$word")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMPREPLY=()
_beadm beadm "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
# print whole words: when @ broke the word, readline would keep "BE@" typed
lead=""
if ((COMP_CWORD >= 2)) && [[ ${COMP_WORDS[COMP_CWORD-1]} == @ ]]; then
    lead=${COMP_WORDS[COMP_CWORD-2]}@
fi
for reply in "${COMPREPLY[@]}"; do printf '%s\n' "$lead$reply"; done
"""


def _complete(tmp_path: Path, line: str, *, bash_completion: bool) -> list[str]:
    if bash_completion and not BASH_COMPLETION.exists():
        # A test that cannot run fails: lab/setup-host installs bash-completion.
        pytest.fail(f"{BASH_COMPLETION} is missing: install bash-completion "
                    "(lab/setup-host does)", pytrace=False)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "beadm"
    fake.write_text(FAKE_BEADM, encoding="utf-8")
    fake.chmod(0o755)
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, "-c", HARNESS, "harness", line],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={
            "PATH": f"{bindir}:/usr/bin:/bin",
            "COMPLETION": str(COMPLETION),
            "USE_BC": "1" if bash_completion else "0",
            "HOME": str(tmp_path),
        },
    )
    return [w for w in result.stdout.splitlines() if w]


MODES = [pytest.param(False, id="plain-bash"), pytest.param(True, id="bash-completion")]


@pytest.mark.parametrize("bc", MODES)
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("beadm a", ["activate", "apt-hook"]),
        ("beadm u", ["umount", "unmount", "upgrade"]),
        ("beadm upgrade -- ", []),
        ("beadm upgrade --j", ["--json"]),
        ("beadm upgrade -n -- --j", []),
        ("beadm --backend ", ["auto", "none", "systemd-boot", "grub"]),
        ("beadm -n --root rpool/ROOT cr", ["create"]),
        ("beadm list -k ", ["date", "name", "space"]),
        ("beadm activate ", ["pve-1", "a.b", "axb"]),
        ("beadm activate -t a", ["a.b", "axb"]),
        ("beadm destroy -F p", ["pve-1"]),
        ("beadm rename pve-1 ", []),
        ("beadm create ", []),
        ("beadm create -e a", ["a.b", "axb"]),
        ("beadm mount a.b ", ["bin"]),  # DIR: directories (the fake's bin/)
        # the global options after the command too (issue 25 item 5)
        ("beadm create --dr", ["--dry-run"]),
        ("beadm activate --backend ", ["auto", "none", "systemd-boot", "grub"]),
        ("beadm activate --root rpool/ROOT a", ["a.b", "axb"]),
        ("beadm rename -n pve-1 ", []),
        ("beadm --v", ["--version", "--verbose"]),
        ("beadm list -o M", ["Mountpoint"]),
        ("beadm list -o BE,S", ["BE,Space"]),
        ("beadm list -o BE,Space,B", []),
        ("beadm list -p -o Space ", ["pve-1", "a.b", "axb"]),
        ("beadm create -o ", []),
    ],
)
def test_words(tmp_path: Path, bc: bool, line: str, expected: list[str]) -> None:
    assert _complete(tmp_path, line, bash_completion=bc) == expected


@pytest.mark.parametrize("bc", MODES)
def test_options_of_a_subcommand(tmp_path: Path, bc: bool) -> None:
    got = _complete(tmp_path, "beadm list -", bash_completion=bc)
    assert set(got) == {"-h", "--help", "-a", "-s", "-D", "-H", "--json", "-k", "-K", "-p", "-o",
                        "-n", "--dry-run", "-v", "--verbose", "--root", "--backend"}


@pytest.mark.parametrize("bc", MODES)
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("beadm destroy pve-1@", ["pve-1@beadm-20260101-100000", "pve-1@before"]),
        ("beadm destroy -F pve-1@bef", ["pve-1@before"]),
        ("beadm destroy a.b@", ["a.b@x"]),  # a.b is a literal, not a pattern matching axb
        ("beadm destroy axb@", []),
        ("beadm create -e pve-1@be", ["pve-1@beadm-20260101-100000", "pve-1@before"]),
    ],
)
def test_snapshots(tmp_path: Path, bc: bool, line: str, expected: list[str]) -> None:
    assert _complete(tmp_path, line, bash_completion=bc) == expected
