"""The closed set of errors beadm reports, each with one message and an exit code.

Every failure below the CLI is raised as one of these classes; the CLI maps them to
``beadm: <message>`` on stderr and the class's exit code, in one place (``cli.main``).
New kinds of failure get a new class here, never an ad-hoc ``sys.exit``.
"""

from __future__ import annotations

from collections.abc import Sequence


class BeadmError(Exception):
    """Base of every error beadm reports. ``exit_code`` is what the process exits with."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(BeadmError):
    """Bad command line: unknown flag, wrong flag mix, missing argument."""

    exit_code = 2


class InvalidNameError(UsageError):
    """A BE or snapshot name that is not a single valid dataset component."""

    exit_code = 2


class NotFoundError(BeadmError):
    """A BE, snapshot, mount or ESP that the command names does not exist."""

    exit_code = 3


class ExistsError(BeadmError):
    """The BE or snapshot to be created already exists."""

    exit_code = 4


class RefusedError(BeadmError):
    """The request is valid but unsafe (destroy the running BE, a snapshot with clones, ...)."""

    exit_code = 5


class ClusterGuardError(RefusedError):
    """activate: booting the BE can break the Proxmox cluster (``beadm.rollback_guard``):
    what to do, then the reasons, on one line."""

    exit_code = 5

    def __init__(self, reasons: Sequence[str], then: str) -> None:
        super().__init__("; ".join([then, *reasons]))  # one line, as every error
        self.reasons = tuple(reasons)


class LockedError(BeadmError):
    """Another beadm run holds the lock and did not release it in time."""

    exit_code = 6


class UnsupportedError(BeadmError):
    """This machine cannot run beadm: not root, no ZFS root, missing tools."""

    exit_code = 7


class BootError(BeadmError):
    """An ESP is missing, full or unwritable, or boot entries could not be written."""

    exit_code = 8


class CommandError(BeadmError):
    """An external command failed; the message carries its argv and stderr."""

    exit_code = 9

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        import shlex

        detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {returncode}"
        super().__init__(f"{shlex.join(argv)}: {detail}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class UpgradeError(BeadmError):
    """upgrade: apt failed inside the new BE (which is then marked failed)."""

    exit_code = 9


class InterruptedByUser(BeadmError):
    """Interrupted (SIGINT / Ctrl-C); what was done so far has been undone where possible."""

    exit_code = 130
