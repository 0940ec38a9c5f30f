"""The lock that serialises changing commands: flock(2) on a file under /run.

Commands wait :data:`WAIT_SECONDS` for it. The kernel and initramfs hooks (``beadm sync
--if-used``) wait :data:`HOOK_WAIT_SECONDS` instead, as long as a ``create`` (copying
kernels to every ESP) or a ``destroy`` can take: a kernel installed while another beadm
runs must still get its boot entries. They say once that they wait, and if the lock is
still held after that, their error names what is missing and what to run.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from beadm.errors import LockedError, UnsupportedError

LOCK_PATH = Path("/run/beadm.lock")
WAIT_SECONDS = 5.0
HOOK_WAIT_SECONDS = 30 * 60.0


class Lock:
    """Exclusive lock; waits up to ``wait`` seconds, then raises LockedError.

    ``on_wait(wait)`` is called once when the lock is found held (to say that we wait);
    ``then`` ends the LockedError message (what the user should do). Use as a context
    manager. Released by the kernel if the process dies.
    """

    def __init__(self, path: Path = LOCK_PATH, wait: float = WAIT_SECONDS, *,
                 on_wait: Callable[[float], None] | None = None,
                 then: str = "try again later") -> None:
        self.path = path
        self.wait = wait
        self.on_wait = on_wait
        self.then = then
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UnsupportedError(f"cannot open lock file {self.path}: {exc.strerror}") from exc
        start = time.monotonic()
        deadline = start + self.wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    os.close(fd)
                    raise LockedError(
                        f"another beadm command is running (lock {self.path} held "
                        f"for more than {_duration(self.wait)}); {self.then}"
                    ) from None
                if not told and self.on_wait is not None:
                    self.on_wait(self.wait)
                    told = True
                # poll quickly at first (short commands), then gently (long waits)
                time.sleep(min(0.05 if now - start < 2 else 0.5, max(deadline - now, 0.0)))
            else:
                self._fd = fd
                return

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g}s"
