"""Lab tier: tests under tests/lab run inside the lab VM (``lab/lab test``), as root, with real
OpenZFS, udev and FAT. They are marked ``lab``; outside the VM they FAIL (never skip).

Fixtures for lab tests:
  ``pool_disks``  the blank disks, ``/dev/disk/by-id/virtio-pool1`` ... (``lab run --disks``)
  ``esps``        the ESPs as (partition path, FAT volume id): ``/dev/disk/by-id/virtio-esp1-part1``
                  with ``1111-AAAA``, ``virtio-esp2-part1`` with ``2222-BBBB``, ...
  ``sh``          run a command, check it, return its stdout (``sh("zpool", "list")``)
"""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def outside_lab_vm() -> str:
    """Why this is not the lab VM ('' when it is)."""
    if os.environ.get("BEADM_LAB") != "1":
        return "BEADM_LAB=1 is not set"
    if "zfs" not in Path("/proc/filesystems").read_text().split():
        return "no zfs in /proc/filesystems"
    if os.geteuid() != 0:
        return "not root"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.lab)


@pytest.fixture(autouse=True)
def _in_lab_vm(request: pytest.FixtureRequest) -> None:
    if HERE in request.path.parents:
        why = outside_lab_vm()
        if why:
            pytest.fail(f"lab test outside the lab VM ({why}): run it with lab/lab test",
                        pytrace=False)


# One hung lab test must fail alone, with the stacks that show where it hangs, instead of
# holding the VM until the run's own timeout (one hung test once cost CI an hour).
TEST_TIMEOUT = float(os.environ.get("BEADM_LAB_TEST_TIMEOUT", "600"))


@pytest.fixture(autouse=True)
def _per_test_timeout(request: pytest.FixtureRequest) -> object:
    if HERE not in request.path.parents or TEST_TIMEOUT <= 0:
        yield None
        return

    def expired(signum: int, frame: object) -> None:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        pytest.fail(f"lab test still running after {TEST_TIMEOUT:.0f} s "
                    "(BEADM_LAB_TEST_TIMEOUT): stacks above", pytrace=True)

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
    try:
        yield None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _by_id(prefix: str) -> list[Path]:
    found = []
    n = 1
    while (path := Path(f"/dev/disk/by-id/virtio-{prefix}{n}")).exists():
        found.append(path)
        n += 1
    return found


@pytest.fixture
def pool_disks() -> list[Path]:
    return _by_id("pool")


@pytest.fixture
def esps() -> list[tuple[Path, str]]:
    return [(Path(f"{disk}-part1"), f"{str(n) * 4}-{chr(64 + n) * 4}")
            for n, disk in enumerate(_by_id("esp"), 1)]


@pytest.fixture
def sh() -> Callable[..., str]:
    def run(*argv: str) -> str:
        res = subprocess.run(argv, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {res.returncode}:\n"
                                 f"{res.stdout}{res.stderr}")
        return res.stdout

    return run
