from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "src"))


def _hypothesis_without_deadline() -> None:
    """The property tests check results, not timings: a busy host (the lab VMs beside the
    unit tier) must not fail them with DeadlineExceeded."""
    from hypothesis import settings

    settings.register_profile("beadm", deadline=None)
    settings.load_profile("beadm")


_hypothesis_without_deadline()
