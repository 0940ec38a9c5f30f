"""What the command line talks to (:class:`Deps`, replaced in parts by the tests), and
:func:`build_manager`, the one place a :class:`beadm.be.BeManager` is made for a command."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from beadm import chroot
from beadm import config as conf
from beadm import watchdog as wd
from beadm.backend import BootBackend
from beadm.be import BeManager
from beadm.lock import HOOK_WAIT_SECONDS, LOCK_PATH, Lock
from beadm.mounts import MOUNTINFO
from beadm.record import field, record
from beadm.registry import make_backend
from beadm.runner import Runner, SubprocessRunner


@record
class Deps:
    """What :func:`main` talks to; tests replace parts."""

    #: (dry_run, stdout) -> the runner; dry-run plans are printed to stdout.
    make_runner: Callable[[bool, TextIO], Runner] = (
        lambda dry, out: SubprocessRunner(dry_run=dry, out=out)
    )
    make_backend: Callable[[str, Runner], BootBackend] = make_backend
    mountinfo: Path = MOUNTINFO
    running_root: Path = Path("/")
    lock_path: Path = LOCK_PATH
    lock_wait: float = 5.0
    hook_lock_wait: float = HOOK_WAIT_SECONDS  # sync --if-used (the kernel hooks), trial-boot
    config_path: Path = conf.CONFIG_PATH
    proc: Path = Path("/proc")
    euid: Callable[[], int] = os.geteuid
    stdin: TextIO | None = None
    stdout: TextIO | None = None
    stderr: TextIO | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    #: True when this beadm runs in a chroot (see beadm.chroot)
    in_chroot: Callable[[], bool] = lambda: chroot.in_chroot()
    #: trial-boot: stop the trial's watchdog (beadm.watchdog.disarm); its notes
    disarm: Callable[[], list[str]] = lambda: wd.disarm()


#: Commands that change what boots (or write ESPs): refused in a chroot.

def build_manager(args: argparse.Namespace, deps: Deps, out: TextIO, err: TextIO, *,
                  plan: TextIO | None = None) -> BeManager:
    """The manager of every command that has one (the apt hook's too): the runner (a dry
    run's plan to ``plan``, else ``out``), the ``--backend``, ``--root`` and the lock."""
    runner = deps.make_runner(args.dry_run, plan or out)
    backend = deps.make_backend(args.backend, runner)
    return BeManager(
        runner,
        backend,
        root=args.root,
        mountinfo=deps.mountinfo,
        lock=_lock(args, deps, err),
        running_root=deps.running_root,
        out=plan or out,
    )


def _lock(args: argparse.Namespace, deps: Deps, err: TextIO) -> Lock:
    """The hooks' sync waits as long as a create can take, and says so (issue 10.8);
    trial-boot waits as long too, but no longer than its watchdog allows (issue 23.6)."""
    if args.command == "trial-boot":
        return _TrialLock(deps, err)
    if args.command != "sync" or not args.only_if_used:
        return Lock(deps.lock_path, deps.lock_wait)

    def waiting(wait: float) -> None:
        print(f"beadm: waiting up to {wait / 60:g} min for another beadm command to finish "
              "(new kernels get their boot entries after it)", file=err, flush=True)

    return Lock(deps.lock_path, deps.hook_lock_wait, on_wait=waiting,
                then="boot entries for kernels or initrds installed meanwhile are missing: "
                     "run 'beadm sync' once the other command has finished")


class _TrialLock(Lock):
    """trial-boot's lock: at boot an apt or kernel hook may hold it (``sync --if-used``, up
    to :data:`HOOK_WAIT_SECONDS`), so it waits as long as they do, but in a trial boot only
    until :data:`beadm.watchdog.SETTLE_SECONDS` before the trial's watchdog would reset the
    machine (worked out at each acquire: trial-boot takes the lock twice, around its checks)."""

    def __init__(self, deps: Deps, err: TextIO) -> None:
        def waiting(wait: float) -> None:
            print(f"beadm: waiting up to {wait:.0f}s for another beadm command to finish "
                  "(the trial boot is settled after it)", file=err, flush=True)

        super().__init__(deps.lock_path, deps.hook_lock_wait, on_wait=waiting,
                         then="the trial boot is not settled (it stays pending): run "
                              "'beadm trial-boot' once the other command has finished")
        self._deps = deps

    def acquire(self) -> None:
        self.wait = self._deps.hook_lock_wait
        left = wd.time_left(self._deps.proc)
        if left is not None:
            self.wait = min(self.wait, max(left - wd.SETTLE_SECONDS, 0.0))
        super().acquire()
