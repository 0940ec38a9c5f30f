"""The warnings of one hook call, collected as the call goes (each said once)."""

from __future__ import annotations

from collections.abc import Iterator

from beadm.backend import Warnings


class Notes:
    """What one changing hook found that did not stop it: made at the start of the call,
    handed down to the helpers, returned by the hook (:meth:`done`); never kept after."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, note: str) -> None:
        """Add ``note`` unless this call has it already (a note once per call)."""
        if note not in self._lines:
            self._lines.append(note)

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def done(self) -> Warnings:
        return tuple(self._lines)
