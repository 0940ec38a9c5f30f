"""The unit tier's worlds: fakes and temporary-directory stand-ins for a host (a ZFS pool's
listings, ESPs, GRUB, Proxmox's state, the activate guard's roots) that the tests under
tests/unit build their cases on. No test module lives here, and no test module is imported
by another: what tests share lives in this package. ``tests/unit`` is on pytest's
``pythonpath`` (pyproject.toml), so tests import ``worlds.<name>``; tests/unit/conftest.py
offers the worlds that need no parameters as fixtures."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
"""The checkout's root (for tests that read the repository's own files)."""
FIXTURES = REPO / "tests" / "unit" / "fixtures"
"""Captured and handwritten command outputs (tests/unit/fixtures/README.md)."""
