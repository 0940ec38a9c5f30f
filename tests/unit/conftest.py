"""The unit tier's one conftest: the worlds (tests/unit/worlds) a test needs without
parameters, as fixtures. A test that builds a world with parameters (dry run, another
mountinfo, several worlds in one test) uses the class from ``worlds.<name>`` itself.

  ``sdboot_world``  two ESPs for systemd-boot, a pool's BEs as directories (worlds.sdboot)
  ``grub_world``    two ESPs with GRUB and proxmox-boot-tool's layout (worlds.grub)
  ``guard_world``   activate's guard: the running root and a target BE (worlds.guard)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from worlds.grub import GrubWorld
from worlds.guard import World as GuardWorld
from worlds.sdboot import World as SdbootWorld


def _hypothesis_without_deadline() -> None:
    """The property tests check results, not timings: a busy host (the lab VMs beside the
    unit tier) must not fail them with DeadlineExceeded."""
    from hypothesis import settings

    settings.register_profile("beadm", deadline=None)
    settings.load_profile("beadm")


_hypothesis_without_deadline()


@pytest.fixture
def sdboot_world(tmp_path: Path) -> SdbootWorld:
    return SdbootWorld(tmp_path)


@pytest.fixture
def grub_world(tmp_path: Path) -> GrubWorld:
    return GrubWorld(tmp_path)


@pytest.fixture
def guard_world(tmp_path: Path) -> GuardWorld:
    return GuardWorld(tmp_path)
