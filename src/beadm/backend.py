"""The bootloader backend interface, its registry, and the no-op backend.

The BE library (``beadm.be``) calls these hooks at fixed points of each lifecycle
command; a backend makes BEs bootable (writes kernels, entries, the BE's own kernel
command line) and reports which BE boots next. Backends are chosen from an explicit
registry (``beadm.registry``), never discovered by import side effects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from beadm.errors import UnsupportedError
from beadm.record import record
from beadm.runner import Runner


@record
class BeRef:
    """What a backend needs to know about one BE."""

    name: str  # e.g. "pve-1"
    dataset: str  # e.g. "rpool/ROOT/pve-1"
    description: str = ""
    running: bool = False  # mounted at / right now


@record
class KernelPin:
    """``proxmox-boot-tool kernel pin KVER [--next-boot]`` in a BE: the kernel it boots."""

    be: str
    kver: str
    once: bool  # --next-boot: this one boot, then the BE's newest (or its permanent pin)
    present: bool  # False: the BE has no such kernel in its /boot (it boots its newest)

    def describe(self) -> str:
        how = "for the next boot only (--next-boot)" if self.once else "until unpinned"
        if not self.present:
            return (f"BE {self.be}: kernel {self.kver} is pinned {how}, but it is not in the "
                    "BE's /boot: the BE boots its newest kernel")
        return f"BE {self.be} boots kernel {self.kver}: pinned {how} (proxmox-boot-tool kernel pin)"


@record
class BootState:
    """Which BEs boot next, as the boot chain really stands (not as beadm last wrote it)."""

    next_boot: str | None = None  # BE name shown with R
    once: str | None = None  # BE name shown with T (boots once, then next_boot again)
    warnings: tuple[str, ...] = ()  # e.g. "loader.conf default overwritten by proxmox-boot-tool"
    # False: the backend cannot tell what boots next (e.g. a GRUB host): no BE is shown with R,
    # not even the pool's bootfs (which GRUB and systemd-boot ignore)
    decides: bool = True
    pins: tuple[KernelPin, ...] = ()  # the running BE's kernel pin, if any
    trial: str | None = None  # a trial boot (activate --trial) is pending for this BE
    trial_tries: int | None = None  # its tries left (the most any ESP holds)


#: What a changing hook found that did not stop it (an EFI variable write refused, a BE left
#: lean on a tight ESP, ...): one line each, returned by the hook, shown by the command.
Warnings = tuple[str, ...]


@record
class Checked:
    """What :meth:`BootBackend.check` found: ``problems`` (drift, one line each),
    ``notes`` (facts worth showing beside them: a kernel pin, a pending trial) and
    ``warnings`` (what a changing hook would warn of: ESPs too tight for every kernel, a
    pinned kernel gone)."""

    problems: tuple[str, ...] = ()
    notes: tuple[object, ...] = ()
    warnings: Warnings = ()


@record
class EspUsage:
    """One ESP's space as the retention policy sees it (``esp_usage``), in bytes: its
    size, what is free, and each file beadm keeps on it (an entry, a stored kernel or
    initrd; rounded up to whole clusters) with the BEs whose entries need it. A file is
    freed when every BE that needs it is gone; shared kernels free nothing before."""

    uuid: str
    size: int
    free: int
    files: tuple[tuple[int, frozenset[str]], ...] = ()


class PendingTrial(Protocol):
    """A pending trial boot (``activate --trial``) as a backend reads it."""

    @property
    def be(self) -> str: ...  # the BE on trial

    @property
    def base(self) -> str: ...  # its entry (one trial differs from another by it)


class BootBackend(Protocol):
    """Hooks the BE library calls. Every hook must be safe to re-run (idempotent).

    When the library calls them (``beadm.be.BeManager``), always holding the lock:

    - ``init``: ``beadm init [NAME]``, on an existing BE.
    - ``post_create``: after every dataset of the new BE exists, before its
      ``org.beadm:state=creating`` mark is cleared; if it raises, the create is undone
      (``post_destroy`` is called for the new BE, then its datasets are destroyed).
    - ``activate``: after the pool's ``bootfs`` (not with ``temporary``) and the
      ``canmount`` properties are set.
    - ``post_rename``: after ``zfs rename`` (and ``bootfs`` follow-up). If it raises,
      the rename is undone: ``bootfs`` back, ``zfs rename`` back, then
      ``post_rename(new, old)``, which must put the old BE's entries back. A killed
      rename is finished by the next changing command, which calls ``post_rename``
      again (the BE root carries ``org.beadm:state=renaming:OLD`` until it succeeded).
    - ``post_destroy``: after the BE's datasets (and its beadm origin snapshot) are gone;
      also for half-created BEs that a killed create left behind.
    - ``boot_state``: by ``list`` and before ``destroy`` (R and T are refused).
    - ``check`` / ``sync``: ``beadm check`` / ``beadm sync`` with every BE.

    - ``preflight``: under the lock, before a boot-changing command (create, rename,
      destroy of a BE, activate, init, sync, migrate) changes anything; raises (e.g.
      UnsupportedError on a GRUB host) to refuse the command.
    - ``check_rename``: by ``rename``, before any change; raises to refuse (e.g. an ESP
      without room for the new entries).

    - ``hold`` / ``release`` / ``be_view``: one session (mount namespace, ESP and BE
      mounts) for a whole command; ``be_view`` is a BE's root mounted in it (None: no
      session, the library mounts the BE itself).
    - ``esp_usage``: ``prune``'s ESP floor (None: unknown, the floor is not applied).
    - ``migrate``: ``beadm migrate`` (refuse with UnsupportedError where there is nothing
      to migrate from).
    - ``trials`` and the trial hooks (``activate --trial``, ``beadm trial-boot``): where
      ``trials()`` is False, ``activate_trial`` refuses (UnsupportedError, with the reason),
      ``trial_state`` is None and ``booted_trial`` False.
    - Every changing hook returns its :data:`Warnings` (the library hands them to the caller
      in the command's result); ``check`` returns a :class:`Checked`. No hook leaves state
      for a later call to read.

    Every hook is declared here and every backend has each one: the library never looks
    one up by name.
    """

    name: str

    def boot_state(self, bes: list[BeRef]) -> BootState:
        """Report R and T among ``bes``; cheap (no ESP mount unless unavoidable)."""
        ...

    def preflight(self) -> None:
        """Refuse (raise) a boot-changing command on a host this backend cannot boot."""
        ...

    def trials(self) -> bool:
        """Whether ``activate --trial`` works on this host (boot counting)."""
        ...

    def check_rename(self, old: BeRef, new: BeRef) -> None:
        """Refuse (raise) a rename that would fail half-way (e.g. no room on an ESP)."""
        ...

    def init(self, be: BeRef) -> Warnings:
        """Adopt an existing dataset as a BE: write its cmdline and its boot entries."""
        ...

    def post_create(self, be: BeRef) -> Warnings:
        """A new BE exists (not active): make it bootable."""
        ...

    def activate(self, be: BeRef, *, temporary: bool) -> Warnings:
        """Make ``be`` boot next (``temporary``: once only)."""
        ...

    def post_rename(self, old: BeRef, new: BeRef) -> Warnings:
        """Datasets were renamed: move entries, rewrite the BE's cmdline."""
        ...

    def post_destroy(self, be: BeRef) -> Warnings:
        """The BE's datasets are gone: remove its entries, free unshared kernel files."""
        ...

    def check(self, bes: list[BeRef]) -> Checked:
        """Report drift (between ESPs, and between ESPs and ZFS), one line per problem."""
        ...

    def sync(self, bes: list[BeRef], *, only_if_used: bool = False) -> Warnings:
        """Repair what :meth:`check` reports: re-copy, re-write entries, collect garbage.
        ``only_if_used`` (the kernel and initramfs hooks): do nothing where beadm has not
        written boot entries yet, so installing beadm changes no ESP before ``init``."""
        ...

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """Share one session between every hook of a command until the hold ends."""
        ...

    def release(self) -> None:
        """Unmount everything of the held session now (it reopens when needed)."""
        ...

    def be_view(self, be: BeRef, *, writable: bool) -> Path | None:
        """BE ``be``'s root mounted in the held session (None: nothing held)."""
        ...

    def esp_usage(self, bes: list[BeRef]) -> tuple[EspUsage, ...] | None:
        """Each ESP's space and what beadm keeps on it (None: unknown)."""
        ...

    def migrate(self, bes: list[BeRef]) -> Warnings:
        """Take over the old shell beadm's boot entries (or refuse: UnsupportedError)."""
        ...

    def activate_trial(self, be: BeRef, fallback: BeRef, tries: int, watchdog: int) -> Warnings:
        """Boot ``be`` next with ``tries`` counted tries, ``fallback`` the default after."""
        ...

    def end_trial(self, bes: list[BeRef]) -> Warnings:
        """Give up the pending trial: the fallback stays the default."""
        ...

    def trial_state(self, bes: list[BeRef]) -> PendingTrial | None:
        """The pending trial, if any."""
        ...

    def booted_trial(self) -> bool:
        """Whether this boot came from a trial's counted entry."""
        ...


class NoTrialBoots:
    """The trial hooks of a backend without trial boots: ``activate_trial`` refuses with
    :attr:`no_trials` (UnsupportedError), nothing is ever pending or booted as a trial."""

    no_trials = "this boot backend has no trial boots"

    def trials(self) -> bool:
        return False

    def activate_trial(self, be: BeRef, fallback: BeRef, tries: int, watchdog: int) -> Warnings:
        raise UnsupportedError(self.no_trials)

    def end_trial(self, bes: list[BeRef]) -> Warnings:
        return ()

    def trial_state(self, bes: list[BeRef]) -> PendingTrial | None:
        return None

    def booted_trial(self) -> bool:
        return False


class NoopBackend(NoTrialBoots):
    """Does nothing and knows nothing: for hosts (or tests) where beadm manages datasets only.

    With it, the BE library shows the pool's ``bootfs`` BE as next boot (R).
    """

    name = "none"
    no_trials = "backend none has no trial boots"

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def boot_state(self, bes: list[BeRef]) -> BootState:
        return BootState()

    def preflight(self) -> None:
        pass

    def check_rename(self, old: BeRef, new: BeRef) -> None:
        pass

    def init(self, be: BeRef) -> Warnings:
        return ()

    def post_create(self, be: BeRef) -> Warnings:
        return ()

    def activate(self, be: BeRef, *, temporary: bool) -> Warnings:
        return ()

    def post_rename(self, old: BeRef, new: BeRef) -> Warnings:
        return ()

    def post_destroy(self, be: BeRef) -> Warnings:
        return ()

    def check(self, bes: list[BeRef]) -> Checked:
        return Checked()

    def sync(self, bes: list[BeRef], *, only_if_used: bool = False) -> Warnings:
        return ()

    def esp_usage(self, bes: list[BeRef]) -> tuple[EspUsage, ...] | None:
        return None  # no ESP of its own: unknown

    def hold(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def release(self) -> None:
        return None

    def be_view(self, be: BeRef, *, writable: bool) -> Path | None:
        return None  # no session: the library mounts what it reads itself

    def migrate(self, bes: list[BeRef]) -> Warnings:
        raise UnsupportedError(f"backend {self.name} has nothing to migrate")


BackendFactory = Callable[[Runner], BootBackend]

# The registry of backends (name -> factory) lives in ``beadm.registry`` so that this
# interface module imports no implementation.
