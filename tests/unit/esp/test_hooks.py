"""The kernel hook beadm installs (beadm.esp.hooks) is the repository's hooks/ copy."""

from __future__ import annotations

import os

from worlds import REPO


def test_hook_copy_in_repo_matches_installed_text() -> None:
    from beadm.esp import hooks

    repo_hook = REPO / "hooks" / hooks.NAME
    assert repo_hook.read_text() == hooks.SCRIPT
    assert os.access(repo_hook, os.X_OK)
