"""Access to the machine: ESP list, mounting ESPs and BEs, EFI variables.

One :class:`Session` per backend call, or per whole command while the BE library holds
the host (:meth:`SystemHost.hold`: the activate guard, the drop-ins and the backend then
share one namespace, one mount of each ESP and of the target BE; issue 15): each ESP is
mounted at most once, lazily, and every mount is undone when the session closes, also on
error. The library releases the held session before anything that must happen in the
host's own mount namespace (``beadm mount``/``umount``, unmounting a BE it destroys,
``zfs destroy``/``rename``, the shared-state move, ``upgrade``'s chroot).

Decision on the mount namespace: the process itself enters its own mount namespace
(``unshare(CLONE_NEWNS)`` through ctypes, then ``mount --make-rslave /``) for the
session only, and returns to the original namespace with ``setns`` on a saved
``/proc/self/ns/mnt`` descriptor when the session closes. No re-exec is needed, child
processes (``mount``) inherit the namespace, and if beadm is killed the namespace, with
every mount in it, dies with the process: an ESP is never left mounted for
``proxmox-boot-tool`` to trip on. The namespace is entered only when something must be
mounted (``list`` usually does not).

Slave, not private, propagation (issue 10.7): a slave receives the host's mount and
unmount events but sends none back. So what the host unmounts during a session (a
dataset a concurrent ``zfs destroy`` needs free, a disk being removed) is gone in
beadm's namespace too instead of staying alive and busy there, while nothing beadm
mounts inside (ESPs, BEs) ever appears in the host's namespace.

:class:`DirHost` is the same interface over plain directories, for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, TextIO

from beadm import mounts as mnt
from beadm.backend import BeRef
from beadm.errors import BeadmError, BootError, CommandError, UnsupportedError
from beadm.esp.efivars import EFIVARS, EfiVars
from beadm.esp.store import EspStore
from beadm.runner import LineSink, Result, Runner, SubprocessRunner
from beadm.zfs import Zfs

UUID_FILES = ("proxmox-boot-uuids", "pve-efiboot-uuids")  # new name, pre-6.4 name
CLONE_NEWNS = 0x00020000
log = logging.getLogger(__name__)


def read_uuids(etc_kernel: Path) -> list[str]:
    """ESP volume ids from the first uuids file that exists (sorted, unique)."""
    for name in UUID_FILES:
        path = etc_kernel / name
        if path.is_file():
            ids = {ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()}
            found = sorted(i for i in ids if i and not i.startswith("#"))
            if not found:
                raise BootError(f"{path} lists no ESP")
            return found
    raise BootError(
        f"no ESP list: neither {etc_kernel}/{UUID_FILES[0]} nor {UUID_FILES[1]} exists "
        "(is this a proxmox-boot-tool managed host?)")


class Esp:
    """One ESP of the list: its store when mounted, else why it is not available.

    ``missing``: its device is not there at all (a disk of a mirror removed or dead): the
    commands work on the other ESPs and warn (a degraded host must stay manageable);
    any other failure of a present ESP is an error. Mutable: a command sets ``store`` to
    None when the ESP fails part-way (the rest of the command leaves it alone)."""

    def __init__(self, uuid: str, store: EspStore | None, error: str | None = None,
                 missing: bool = False) -> None:
        self.uuid = uuid
        self.store = store
        self.error = error
        self.missing = missing

    def __repr__(self) -> str:
        return f"Esp({self.uuid!r}, {self.store!r}, error={self.error!r}, missing={self.missing})"


class Session(Protocol):
    def esps(self) -> list[Esp]: ...

    def be_root(self, be: BeRef, *, writable: bool) -> Path: ...


class Host(Protocol):
    efivars: EfiVars
    etc_kernel: Path  # the running root's /etc/kernel: its ESP list is the reference
    esp_mounts: int
    be_mounts: int

    def session(self) -> contextlib.AbstractContextManager[Session]: ...

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """While held, every :meth:`session` is one and the same, kept open (its private
        namespace, ESP and BE mounts) until the hold ends or :meth:`release`."""
        ...

    def release(self) -> None:
        """Close the held session now (the next :meth:`session` of the hold opens a new
        one): before anything that must happen in the host's mount namespace."""
        ...

    @property
    def holding(self) -> bool: ...

    def proc_cmdline(self) -> str | None: ...

    def running_kernel(self) -> str: ...

    def esp_present(self, uuid: str) -> bool:
        """Whether the ESP with this volume id is there (listed or not)."""
        ...


# -- the real machine ---------------------------------------------------------------

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


def _new_dir(parent: str, prefix: str) -> Path:
    """A new directory ``parent/prefix<12 random hex digits>``, mode 0700: what
    ``tempfile.mkdtemp(prefix=prefix, dir=parent)`` makes, without importing tempfile
    (shutil, random, bz2, lzma: start-up time of every command that mounts an ESP, issue 15)."""
    for _ in range(100):
        d = Path(parent) / f"{prefix}{os.urandom(6).hex()}"
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return d
    raise FileExistsError(f"no unused name for a directory {parent}/{prefix}...")


class SystemSession:
    def __init__(self, host: SystemHost) -> None:
        self._host = host
        self._ns: PrivateNamespace | None = None
        self._base: Path | None = None
        self._mounted: list[Path] = []
        self._esps: list[Esp] | None = None
        self._bes: dict[str, tuple[Path, bool]] = {}  # dataset -> (where, writable)
        self._foreign: set[str] = set()  # of those, mounted by someone else: never remounted

    def _dir(self, name: str) -> Path:
        if self._ns is None:
            self._ns = self._host.namespace_factory(self._host.mounter)
            self._ns.enter()
        if self._base is None:
            self._base = _new_dir(self._host.tmp_base, "beadm-")
        d = self._base / name
        d.mkdir(mode=0o700)
        return d

    def esps(self) -> list[Esp]:
        if self._esps is not None:
            return self._esps
        host = self._host
        self._esps = []
        for uuid in read_uuids(host.etc_kernel):
            dev = host.dev_by_uuid / uuid
            if not dev.exists():
                self._esps.append(Esp(uuid, None, f"ESP {uuid} is missing ({dev} not found)",
                                      missing=True))
                continue
            d = self._dir(f"esp-{uuid}")
            opts = "ro,umask=0077" if host.runner.dry_run else "umask=0077"
            try:
                host.mounter.run(["mount", "-t", "vfat", "-o", opts, str(dev), str(d)],
                                readonly=True)
            except BeadmError as exc:
                self._esps.append(Esp(uuid, None, f"ESP {uuid} cannot be mounted: {exc}"))
                continue
            host.esp_mounts += 1
            self._mounted.append(d)
            self._esps.append(Esp(uuid, EspStore(d, uuid, dry_run=host.runner.dry_run,
                                                 out=host.out)))
        return self._esps

    def be_root(self, be: BeRef, *, writable: bool) -> Path:
        if be.running:
            return self._host.running_root
        writable = writable and not self._host.runner.dry_run
        have = self._bes.get(be.dataset)
        if have and (have[1] or not writable):
            return have[0]
        host = self._host
        if have and be.dataset in self._foreign:
            raise BootError(f"BE {be.name} is mounted read-only at {have[0]}: unmount it "
                            f"(beadm umount {be.name}) and retry")
        if have:  # mounted read-only, now needed writable
            host.runner.run(["mount", "-o", "remount,rw", str(have[0])], readonly=True)
            self._bes[be.dataset] = (have[0], True)
            return have[0]
        # mounted already (``beadm mount``, an admin's mount): ZFS refuses a second mount of
        # a dataset ("dataset is busy"), so use that one, and leave it mounted afterwards
        found = host.mounted_at(be.dataset)
        if found is not None:
            self._foreign.add(be.dataset)
            self._bes[be.dataset] = found
            return self.be_root(be, writable=writable)
        d = self._dir(f"be-{len(self._bes)}")
        Zfs(host.mounter).mount_at(be.dataset, str(d), ro=not writable, readonly=True)
        host.be_mounts += 1
        self._mounted.append(d)
        self._bes[be.dataset] = (d, writable)
        return d

    def close(self) -> None:
        try:
            for d in reversed(self._mounted):
                r = self._host.mounter.run(["umount", str(d)], readonly=True, check=False)
                if r.returncode != 0:
                    self._host.mounter.run(["umount", "-l", str(d)], readonly=True, check=False)
            if self._base is not None:  # rmdir only: never recurse into a mount point
                for d in [*self._base.iterdir(), self._base]:
                    with contextlib.suppress(OSError):
                        d.rmdir()
        finally:
            if self._ns is not None:
                self._ns.leave()


class SystemHost:
    """The running machine. Paths are parameters so tests can point them elsewhere."""

    def __init__(self, runner: Runner, *, etc_kernel: Path = Path("/etc/kernel"),
                 efivars: Path = EFIVARS, dev_by_uuid: Path = Path("/dev/disk/by-uuid"),
                 running_root: Path = Path("/"), tmp_base: str = "/run",
                 out: TextIO | None = None, mountinfo: Path = mnt.MOUNTINFO) -> None:
        self.runner = runner
        self.mountinfo = mountinfo
        #: the session's own mounts: mount(2) on the real machine, else (tests) the runner
        self.mounter: Runner = LibcMounts(runner) if isinstance(runner, SubprocessRunner) \
            else runner
        self.etc_kernel = etc_kernel
        self.dev_by_uuid = dev_by_uuid
        self.running_root = running_root
        self.tmp_base = tmp_base
        self.out = out if out is not None else sys.stdout
        self.efivars = EfiVars(efivars, dry_run=runner.dry_run, out=self.out)
        self.esp_mounts = 0
        self.be_mounts = 0
        self.namespace_factory = PrivateNamespace
        self._holds = 0
        self._held: SystemSession | None = None

    def mounted_at(self, dataset: str) -> tuple[Path, bool] | None:
        """Where ``dataset`` is mounted already (the last such mount) and whether that
        mount is writable; None when it is not mounted."""
        found = None
        for m in mnt.read_mounts(self.mountinfo):
            if m.fstype == "zfs" and m.source == dataset:
                found = (Path(m.mountpoint), m.writable)
        return found

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        if self._holds:
            if self._held is None:
                self._held = SystemSession(self)
            yield self._held
            return
        s = SystemSession(self)
        try:
            yield s
        finally:
            s.close()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if not self._holds:
                self.release()

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    @property
    def holding(self) -> bool:
        return self._holds > 0

    def proc_cmdline(self) -> str | None:
        try:
            return Path("/proc/cmdline").read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def running_kernel(self) -> str:
        return os.uname().release

    def esp_present(self, uuid: str) -> bool:
        return (self.dev_by_uuid / uuid).exists()


# -- plain directories (tests, benchmarks) ------------------------------------------

class DirSession:
    def __init__(self, host: DirHost) -> None:
        self._host = host
        self._esps: list[Esp] | None = None

    def esps(self) -> list[Esp]:
        if self._esps is None:
            self._esps = []
            for uuid in read_uuids(self._host.etc_kernel):
                path = self._host.esp_dirs.get(uuid)
                if path is None or not path.is_dir():
                    self._esps.append(Esp(uuid, None, f"ESP {uuid} is missing", missing=True))
                    continue
                self._host.esp_mounts += 1
                self._esps.append(Esp(uuid, EspStore(path, uuid, dry_run=self._host.dry_run,
                                                     out=self._host.out, step=self._host.step)))
        return self._esps

    def be_root(self, be: BeRef, *, writable: bool) -> Path:
        if be.dataset not in self._host.be_dirs:
            raise BootError(f"cannot mount {be.dataset}")
        if not be.running:
            self._host.be_mounts += 1
        return self._host.be_dirs[be.dataset]


class DirHost:
    """ESPs and BE trees as directories: ``esp_dirs`` uuid -> dir, ``be_dirs`` dataset -> dir."""

    def __init__(self, etc_kernel: Path, esp_dirs: dict[str, Path], be_dirs: dict[str, Path],
                 efivars: Path, *, dry_run: bool = False, out: TextIO | None = None,
                 kernel: str = "0-none", cmdline: str | None = None) -> None:
        self.etc_kernel = etc_kernel
        self.esp_dirs = esp_dirs
        self.be_dirs = be_dirs
        self.dry_run = dry_run
        self.out = out if out is not None else sys.stdout
        self.efivars = EfiVars(efivars, dry_run=dry_run, out=self.out)
        self.esp_mounts = 0
        self.be_mounts = 0
        self.step: Callable[[str], None] | None = None
        self._kernel = kernel
        self._cmdline = cmdline
        self._holds = 0
        self._held: DirSession | None = None

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        if self._holds:
            if self._held is None:
                self._held = DirSession(self)
            yield self._held
            return
        yield DirSession(self)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if not self._holds:
                self.release()

    def release(self) -> None:
        self._held = None

    @property
    def holding(self) -> bool:
        return self._holds > 0

    def proc_cmdline(self) -> str | None:
        return self._cmdline

    def running_kernel(self) -> str:
        return self._kernel

    def esp_present(self, uuid: str) -> bool:
        path = self.esp_dirs.get(uuid)
        return path is not None and path.is_dir()
