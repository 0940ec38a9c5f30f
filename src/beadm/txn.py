"""Undo logs for multi-step changes: each done step records how to undo it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from beadm.errors import BeadmError

log = logging.getLogger(__name__)


class UndoLog:
    """Steps done so far; :meth:`rollback` undoes them in reverse order, best effort."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def done(self, what: str, undo: Callable[[], None]) -> None:
        """Record that ``what`` happened and that ``undo`` reverts it."""
        self._steps.append((what, undo))

    def rollback(self) -> None:
        while self._steps:
            what, undo = self._steps.pop()
            try:
                undo()
            except BeadmError as exc:
                log.warning("could not undo %s: %s", what, exc)
            else:
                log.info("undid %s", what)

    def __len__(self) -> int:
        return len(self._steps)
