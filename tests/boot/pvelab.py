"""Host-side helper for boot tests: run ``lab/pvelab run`` with step scripts, parse its report.

    from pvelab import run_steps

    result = run_steps('''test "$(findmnt -no SOURCE /)" = rpool/ROOT/pve-1''',
                       '''beadm list''')
    assert result.returncode == 0, result.output
    assert [b.root for b in result.boots] == ["rpool/ROOT/pve-1"] * 2

A step is the text of a bash script (or a Path to one); step k runs in boot k (a step that calls
``pvelab-crash`` still counts as done: the next step runs after the next boot). See lab/README.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PVELAB = REPO / "lab" / "pvelab"
BOOT_LINE = re.compile(r"^PVELAB boot=(\d+) root=(\S+) entry=(\S+)$")
STEP_LINE = re.compile(r"^\[step (\d+)\] ?(.*)$")
NO_RESULT = 125


@dataclass(frozen=True)
class Boot:
    """One boot of the machine: its number, the dataset at / and LoaderEntrySelected."""

    n: int
    root: str
    entry: str


@dataclass
class PvelabResult:
    returncode: int
    output: str
    boots: list[Boot] = field(default_factory=list)
    steps: dict[int, str] = field(default_factory=dict)  # step number -> its output
    result: str = ""  # the final "PVELAB result=..." line

    @property
    def roots(self) -> list[str]:
        return [b.root for b in self.boots]

    @property
    def entries(self) -> list[str]:
        return [b.entry for b in self.boots]


def parse(output: str, returncode: int = 0) -> PvelabResult:
    """Parse pvelab's output (only the last attempt counts when it retried)."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("PVELAB attempt=")]
    if starts:
        lines = lines[starts[-1]:]
    res = PvelabResult(returncode=returncode, output=output)
    for line in lines:
        if m := BOOT_LINE.match(line):
            res.boots.append(Boot(int(m.group(1)), m.group(2), m.group(3)))
        elif m := STEP_LINE.match(line):
            k = int(m.group(1))
            res.steps[k] = res.steps.get(k, "") + m.group(2) + "\n"
        elif line.startswith("PVELAB result="):
            res.result = line
    return res


def run_steps(*steps: str | Path, timeout: float = 1200, keep: Path | None = None,
              echo: bool = True, idle_boots: int = 1, legacy: bool = False,
              secureboot: bool = False) -> PvelabResult:
    """Run the steps in a fresh Proxmox-like machine; returns the parsed result. The output is
    echoed (pytest shows it for failing tests) unless ``echo`` is False. ``idle_boots``:
    power-ons in a row that may end with no step run (failed boots of a trial)."""
    with tempfile.TemporaryDirectory(prefix="pvelab-steps-") as tmp:
        paths = []
        for k, step in enumerate(steps, 1):
            if isinstance(step, Path):
                paths.append(step)
            else:
                path = Path(tmp) / f"step{k}.sh"
                path.write_text("set -euo pipefail\n" + step + "\n")
                paths.append(path)
        argv = [str(PVELAB), "run", "--timeout", str(timeout), "--idle-boots", str(idle_boots)]
        if keep is not None:
            argv += ["--keep", str(keep)]
        if legacy:
            argv.append("--legacy")
        if secureboot:
            argv.append("--secureboot")
        proc = subprocess.Popen([*argv, *map(str, paths)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        chunks = []
        assert proc.stdout is not None
        for line in proc.stdout:
            chunks.append(line)
            if echo:
                sys.stdout.write(line)
        rc = proc.wait()
    return parse("".join(chunks), rc)


# A step's shell function: crash_after N TEXT LOG powers the machine off once LOG has N lines
# containing TEXT (e.g. a command's `beadm -v` log of the commands it runs).
CRASH_AFTER = r"""
crash_after() {  # crash_after N TEXT LOG: power off once LOG has N lines containing TEXT
    local c i=0
    while :; do
        c=$(grep -cF -- "$2" "$3" 2>/dev/null || true)
        [ "${c:-0}" -lt "$1" ] || break
        i=$((i + 1)); [ "$i" -lt 6000 ] || { echo "never saw $1 x '$2'"; cat "$3"; exit 1; }
        sleep 0.05
    done
    echo "power off after: $(grep -F -- "$2" "$3" | tail -1)"
    pvelab-crash off
}
"""


# Shell functions for steps on the GRUB machines (legacy BIOS, Secure Boot): root_is DATASET
# fails unless DATASET is mounted at /; flags BE prints beadm list's flags of BE; on_esps CMD
# runs CMD with both ESPs mounted read-only at /run/t/esp1 and /run/t/esp2, in a private mount
# namespace.
GRUB_LIB = r"""
root_is() { local r; r=$(findmnt -no SOURCE /)
    [ "$r" = "$1" ] || { echo "root is $r, not $1"; exit 1; }; }
flags() { beadm list -H | awk -F'\t' -v be="$1" '$1 == be { print $2 }'; }
on_esps() { unshare --mount --propagation private sh -c '
    mkdir -p /run/t/esp1 /run/t/esp2
    mount -o ro /dev/disk/by-uuid/C0DE-0001 /run/t/esp1
    mount -o ro /dev/disk/by-uuid/C0DE-0002 /run/t/esp2
    '"$1"; }
"""
