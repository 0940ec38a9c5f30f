"""The lock that serialises changing commands: flock(2) on a file under /run."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from beadm.errors import LockedError, UnsupportedError

LOCK_PATH = Path("/run/beadm.lock")
WAIT_SECONDS = 5.0


class Lock:
    """Exclusive lock; waits up to ``wait`` seconds, then raises LockedError.

    Use as a context manager. Released by the kernel if the process dies.
    """

    def __init__(self, path: Path = LOCK_PATH, wait: float = WAIT_SECONDS) -> None:
        self.path = path
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise UnsupportedError(f"cannot open lock file {self.path}: {exc.strerror}") from exc
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockedError(
                        f"another beadm command is running (lock {self.path} held "
                        f"for more than {self.wait:g}s); try again later"
                    ) from None
                time.sleep(0.05)
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
