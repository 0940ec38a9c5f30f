"""Boot tier: host-side tests that boot the Proxmox-like lab machine through ``lab/pvelab``
(helper: tests/boot/pvelab.py). Every test here is marked ``boot``; they need root, qemu and OVMF
(lab/setup-host) and FAIL, never skip, when those are missing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.boot)


@pytest.fixture(autouse=True)
def _can_boot(request: pytest.FixtureRequest) -> None:
    if HERE not in request.path.parents:
        return
    missing = [p for p in ("qemu-system-x86_64", "qemu-img") if shutil.which(p) is None]
    if not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").exists():
        missing.append("OVMF")
    if os.geteuid() != 0:
        missing.append("root")
    if missing:
        pytest.fail(f"boot tier needs {', '.join(missing)} (run lab/setup-host as root)",
                    pytrace=False)
