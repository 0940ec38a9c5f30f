"""The session's private mount namespace and its own mounts (see :mod:`beadm.esp.host`):
``unshare(CLONE_NEWNS)`` through ctypes with slave propagation, left with ``setns``, and the
session's mounts made with mount(2) as mount(8) would make them."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from beadm.errors import BootError, CommandError, UnsupportedError
from beadm.runner import LineSink, Result, Runner

CLONE_NEWNS = 0x00020000
log = logging.getLogger(__name__)

MS_RDONLY = 0x1
MS_REC = 0x4000
MS_SLAVE = 0x80000
MNT_DETACH = 0x2


def _libc() -> ctypes.CDLL:
    """The C library this process has loaded already (``ctypes.util.find_library`` would
    run ``ldconfig -p`` to find it: a process, twice per session)."""
    return ctypes.CDLL(None, use_errno=True)


class LibcMounts:
    """A runner for the mounts a session makes in its own private namespace: the mount
    propagation (``mount --make-rslave /``), the ESPs (``mount -t vfat -o OPTS DEV DIR``),
    the BEs (``mount -t zfs -o [ro,]zfsutil DATASET DIR``) and every unmount (``umount
    [-l] DIR``), done with mount(2)/umount2(2), the same calls mount(8), umount(8) and
    the ZFS helper make, without a process each (issue 15: under emulation they were most
    of ``list``'s time, and the ZFS helper alone, which loads libzfs, took 0.4 s a BE).

    The ZFS mount is the call libzfs makes (``mount.zfs`` -> ``zfs_mount_at`` ->
    ``do_mount`` on Linux): file system type ``zfs``, the dataset as source, ``MS_RDONLY``
    for ``ro``, and the options string as given plus ``mntpoint=DIR`` (the kernel's hint
    for the ``.zfs`` snapshot automounts). It skips the helper's checks that matter to
    ``zfs mount`` but not here (a ``legacy`` or ``canmount=off`` dataset is mounted all
    the same: a private, temporary mount), and no SELinux ``context=`` options (libzfs
    adds them only for a dataset whose context properties are set; Proxmox runs without
    SELinux). When the call fails, for any reason, the
    helper is run instead: it fails with its own message (or, with a kernel module that
    wants the options otherwise, succeeds), so errors read as before.

    Anything else goes to the real runner. Used only with the real runner
    (:class:`~beadm.runner.SubprocessRunner`); these are queries (they run in a dry run
    too, read-only), logged at debug level like every command."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    @property
    def dry_run(self) -> bool:
        return self._runner.dry_run

    def run(self, argv: Sequence[str], *, readonly: bool = False,
            check: bool = True, on_line: LineSink | None = None) -> Result:
        args = tuple(argv)
        call = _libc_call(args)
        if call is None:
            return self._runner.run(args, readonly=readonly, check=check, on_line=on_line)
        log.debug("run: %s (mount(2))", shlex.join(args))
        start = time.monotonic()
        rc = call(_libc())
        err = ctypes.get_errno() if rc != 0 else 0
        log.debug("took %.3fs: %s", time.monotonic() - start, shlex.join(args))
        if rc == 0:
            return Result(args, 0, "", "")
        if args[:3] == ("mount", "-t", "zfs"):
            log.debug("mount(2) of %s failed (%s): through the ZFS helper", args[5],
                      os.strerror(err))
            return self._runner.run(args, readonly=readonly, check=check)
        result = Result(args, 32, "", f"{args[0]}: {os.strerror(err)}")
        if check:
            raise CommandError(list(args), 32, result.stderr)
        return result


def _libc_call(a: tuple[str, ...]) -> Callable[[ctypes.CDLL], int] | None:
    """The libc call that does what argv ``a`` asks, for the forms :class:`LibcMounts`
    takes; None for any other."""
    def b(text: str) -> bytes:
        return os.fsencode(text)

    if a == ("mount", "--make-rslave", "/"):
        return lambda c: int(c.mount(None, b"/", None, MS_REC | MS_SLAVE, None))
    if len(a) == 7 and a[:3] == ("mount", "-t", "vfat") and a[3] == "-o":
        opts = a[4].split(",")
        flags = MS_RDONLY if "ro" in opts else 0
        data = ",".join(o for o in opts if o not in ("ro", "rw"))
        dev, target = a[5], a[6]
        return lambda c: int(c.mount(b(dev), b(target), b"vfat", flags,
                                     b(data) if data else None))
    if len(a) == 7 and a[:4] == ("mount", "-t", "zfs", "-o") and _zfs_form(a[4], a[6]):
        dataset, target = a[5], a[6]
        flags = MS_RDONLY if "ro" in a[4].split(",") else 0
        data = f"{a[4]},mntpoint={os.path.realpath(target)}"
        return lambda c: int(c.mount(b(dataset), b(target), b"zfs", flags, b(data)))
    if len(a) == 2 and a[0] == "umount" and not a[1].startswith("-"):
        return lambda c: int(c.umount2(b(a[1]), 0))
    if len(a) == 3 and a[:2] == ("umount", "-l"):
        return lambda c: int(c.umount2(b(a[2]), MNT_DETACH))
    return None


def _zfs_form(opts: str, target: str) -> bool:
    """The ZFS mounts :class:`LibcMounts` makes itself: options ``zfsutil`` and at most one
    of ``ro``/``rw``, into a directory whose name cannot break the options string."""
    words = opts.split(",")
    return ("zfsutil" in words and set(words) <= {"zfsutil", "ro", "rw"}
            and len(words) == len(set(words)) and not {"ro", "rw"} <= set(words)
            and not any(c in target for c in ',"'))


class PrivateNamespace:
    """Enter a mount namespace of our own (slave of the host's) for a while, then come
    back (see module doc)."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._old: int | None = None
        self._cwd = "/"

    def enter(self) -> None:
        libc = _libc()
        self._cwd = str(Path.cwd())
        self._old = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        if libc.unshare(CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            os.close(self._old)
            self._old = None
            raise UnsupportedError(f"cannot make a private mount namespace: {os.strerror(err)}")
        try:
            self._runner.run(["mount", "--make-rslave", "/"], readonly=True)
        except BaseException:
            self.leave()
            raise

    def leave(self) -> None:
        if self._old is None:
            return
        libc = _libc()
        rc = libc.setns(self._old, CLONE_NEWNS)
        os.close(self._old)
        self._old = None
        if rc != 0:
            raise BootError(f"cannot leave the private mount namespace: "
                            f"{os.strerror(ctypes.get_errno())}")
        with contextlib.suppress(OSError):
            os.chdir(self._cwd)
