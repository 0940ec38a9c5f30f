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

:mod:`beadm.esp.namespace` enters and leaves the namespace and makes the session's mounts;
:class:`beadm.esp.dirhost.DirHost` is the same interface over plain directories, for tests
and benchmarks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TextIO

from beadm import mounts as mnt
from beadm.backend import BeRef
from beadm.errors import BeadmError, BootError
from beadm.esp.efivars import EFIVARS, EfiVars
from beadm.esp.namespace import LibcMounts as LibcMounts  # re-exported: one place to get it
from beadm.esp.namespace import PrivateNamespace as PrivateNamespace
from beadm.esp.store import EspStore
from beadm.runner import Runner, SubprocessRunner
from beadm.zfs import Zfs

UUID_FILES = ("proxmox-boot-uuids", "pve-efiboot-uuids")  # new name, pre-6.4 name
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

    def close(self) -> None: ...


def at_hand(esps: list[Esp], missing: list[str] | None = None) -> Iterator[EspStore]:
    """The stores of the ESPs at hand, in order; each one that is not there is described
    in ``missing`` as the iteration passes it."""
    for esp in esps:
        if esp.store is None:
            if missing is not None:
                missing.append(esp.error or f"ESP {esp.uuid} is missing")
            continue
        yield esp.store


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


class Holding:
    """The hold of a host (:meth:`Host.hold`): a count of holds and the one session kept
    open while any is held. A subclass says how a session opens (:meth:`_open`)."""

    _holds = 0
    _held: Session | None = None

    def _open(self) -> Session:
        raise NotImplementedError

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        if self._holds:
            if self._held is None:
                self._held = self._open()
            yield self._held
            return
        s = self._open()
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


# -- the real machine ---------------------------------------------------------------

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


class SystemHost(Holding):
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

    def mounted_at(self, dataset: str) -> tuple[Path, bool] | None:
        """Where ``dataset`` is mounted already (the last such mount) and whether that
        mount is writable; None when it is not mounted."""
        found = None
        for m in mnt.read_mounts(self.mountinfo):
            if m.fstype == "zfs" and m.source == dataset:
                found = (Path(m.mountpoint), m.writable)
        return found

    def _open(self) -> Session:
        return SystemSession(self)

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
