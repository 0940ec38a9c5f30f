"""Each command: ``cmd_<name>(mgr, args, deps, out, err) -> exit status``, found in
:data:`COMMANDS` by its name (an alias by its command's, :data:`ALIASES`); ``version``
and ``apt-hook`` have no manager (:data:`WITHOUT_MANAGER`). A command calls
:class:`beadm.be.BeManager` and prints; :func:`beadm.cli.main` maps its errors."""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from beadm import __version__
from beadm import config as conf
from beadm import watchdog as wd
from beadm.be import BeManager
from beadm.cli import output
from beadm.cli.deps import Deps
from beadm.cli.output import shown
from beadm.cli.parser import ALIASES
from beadm.errors import BootError, InterruptedByUser, NotFoundError, RefusedError, UsageError
from beadm.runner import UNDER_BEADM

if TYPE_CHECKING:
    from beadm.rollback_guard import Report

Command = Callable[[BeManager, argparse.Namespace, Deps, TextIO, TextIO], int]
Plain = Callable[[argparse.Namespace, Deps, TextIO, TextIO], int]

#: Commands that change what boots (or write ESPs): refused in a chroot.
BOOT_CHANGING = frozenset({"create", "destroy", "rename", "init", "activate", "sync",
                           "migrate", "trial-boot", "upgrade"})


def cmd_version(args: argparse.Namespace, deps: Deps, out: TextIO, err: TextIO) -> int:
    print(f"beadm {__version__}", file=out)
    return 0


def cmd_apt_hook(args: argparse.Namespace, deps: Deps, out: TextIO, err: TextIO) -> int:
    from beadm.cli import apthook  # only apt's hook needs it

    return apthook.run(args, deps, out, err)


def cmd_list(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
             err: TextIO) -> int:
    if args.sort and args.rsort:
        raise UsageError("list: -k and -K are exclusive")
    if args.json and args.script:
        raise UsageError("list: --json and -H are exclusive")
    if args.columns is not None:
        if args.json:
            raise UsageError("list: --json and -o are exclusive")
        output.list_columns(args.columns)  # an unknown column: before any command runs
    listing = mgr.listing(snapshots=args.all or args.snapshots or args.json,
                          bootfs=args.json)
    infos = list(listing.bes)
    if args.name is not None:
        infos = [i for i in infos if i.be.name == args.name]
        if not infos:
            raise NotFoundError(f"BE {args.name} does not exist under {listing.root}")
    infos = output.sorted_bes(infos, args.rsort or args.sort, reverse=bool(args.rsort))
    output.list_notes(listing, err)
    if args.json:
        output.list_json(listing, infos, mgr.rollback_reports([i.be for i in infos]), out)
    else:
        output.list_table(infos, args, out)
    return 0


def cmd_create(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
               err: TextIO) -> int:
    done = mgr.create(
        args.name, source=args.source, description=args.description, props=args.props
    )
    if args.verbose:
        print(f"created {done.what}", file=err)
    return output.warnings(done.warnings, err)


def cmd_destroy(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
                err: TextIO) -> int:
    if args.origin and "@" in args.name:
        raise UsageError("destroy: -o (also the origin) takes a BE, not a snapshot")
    what = mgr.destroy_check(args.name, force=args.force)
    if not args.force and not mgr.runner.dry_run:
        stdin = deps.stdin if deps.stdin is not None else sys.stdin
        if not stdin.isatty():
            raise RefusedError(f"not destroying {what} without confirmation: use -F")
        print(f"Destroy {what}? [y/N] ", end="", file=out, flush=True)
        answer = stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise RefusedError(f"{what} not destroyed")
    return output.warnings(mgr.destroy(args.name, origin=args.origin,
                                       force=args.force).warnings, err)


def cmd_rename(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
               err: TextIO) -> int:
    return output.warnings(mgr.rename(args.old, args.new).warnings, err)


def cmd_mount(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
              err: TextIO) -> int:
    done = mgr.mount(args.name, args.directory)
    print(done.what, file=out)
    return output.warnings(done.warnings, err)


def cmd_umount(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
               err: TextIO) -> int:
    return output.warnings(mgr.umount(args.target, force=args.force).warnings, err)


def cmd_init(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
             err: TextIO) -> int:
    """init, then: move the Proxmox state (--shared-state), or say in one line that it
    is inside."""
    output.warnings(mgr.init(args.name).warnings, err)
    found = [f for f in mgr.shared_state(move=args.shared_state, out=out) if f.to_move]
    if not found:
        return 0
    if not args.shared_state:
        paths = ", ".join(f.path for f in found)
        print(f"beadm: note: {paths} would go back in time with the BE; "
              "'beadm init --shared-state' moves them to datasets all BEs share", file=err)
    elif not mgr.runner.dry_run:
        for f in found:
            print(f"{f.path}: now on {f.dataset}", file=out)
    return 0


def cmd_activate(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
                 err: TextIO) -> int:
    report = functools.partial(_print_report, force=args.force, err=err)
    if args.trial:
        done = mgr.activate_trial(
            args.name, tries=args.tries, force=args.force,
            watchdog=wd.DEFAULT if args.watchdog is None else args.watchdog, on_report=report)
    elif args.tries != 3:
        raise UsageError("--tries goes with --trial")
    elif args.watchdog is not None:
        raise UsageError("--watchdog goes with --trial")
    else:
        done = mgr.activate(args.name, temporary=args.temporary, force=args.force,
                            on_report=report)
    return output.warnings(done.warnings, err)


def _print_report(report: Report, *, force: bool, err: TextIO) -> None:
    """activate: the network drift (always), and the cluster reasons when --force makes
    them warnings (else they are the error)."""
    if force:
        for reason in report.cluster:
            print(f"beadm: warning: {shown(reason)}", file=err)
    if not report.drift:
        return
    files = ", ".join(shown(d.path) for d in report.drift)
    verb = "differs" if len(report.drift) == 1 else "differ"
    print(f"beadm: warning: {files} of BE {report.be} {verb} from the running BE "
          f"{report.running}; check them, or the host may boot unreachable:", file=err)
    for d in report.drift:
        for line in d.diff:
            print(shown(line, keep_tabs=True), file=err)


def cmd_trial_boot(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
                   err: TextIO) -> int:
    from beadm import health

    # systemd stops the unit with SIGTERM at its TimeoutStartSec: as an error, so that
    # trial_boot's clean-up runs (the watchdog is stopped once the checks passed)
    def stop(signum: int, frame: object) -> None:
        raise InterruptedByUser("stopped (SIGTERM)")

    before = signal.signal(signal.SIGTERM, stop)
    try:
        res = mgr.trial_boot(lambda: health.failures(mgr.runner), reboot=args.reboot,
                             disarm=deps.disarm)
    finally:
        signal.signal(signal.SIGTERM, before)
    if res.kind == "confirmed":
        print(f"trial boot of {res.be} passed its checks: {res.be} is the default now", file=out)
        for note in res.why:
            print(f"beadm: {note}", file=out)
    elif res.kind == "settled":
        print(f"trial boot of {res.be}: another command ended the trial while its checks ran; "
              "nothing changed", file=out)
        for note in res.why:
            print(f"beadm: {note}", file=out)
    elif res.kind == "ended":
        print(f"this boot is a trial of {res.be} that another command ended before "
              "trial-boot ran: nothing to settle; its watchdog is stopped", file=out)
        for note in res.why:
            print(f"beadm: {note}", file=out)
    elif res.kind == "given-up":
        print(f"trial boot of {res.be} given up: {'; '.join(res.why)}", file=out)
    elif res.kind == "failed":
        then = "rebooting into it" if args.reboot else "not rebooting (--no-reboot)"
        raise BootError(f"trial boot of {res.be} failed: {'; '.join(res.why)}; the previous "
                        f"default is restored, {then}")
    return output.warnings(res.warnings, err)


def cmd_check(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
              err: TextIO) -> int:
    checked = mgr.check()
    for line in checked.problems:
        print(line, file=out)
    for note in checked.notes:
        print(f"beadm: note: {note}", file=err)
    output.warnings(checked.warnings, err)
    return 1 if checked.problems else 0


def cmd_sync(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
             err: TextIO) -> int:
    if args.only_if_used and deps.environ.get(UNDER_BEADM):
        # a hook run by a command that beadm itself runs under its lock (a refresh):
        # that beadm re-asserts the boot defaults when it is done; waiting would hang
        logging.getLogger("beadm").debug(
            "sync --if-used under beadm (pid %s): nothing to do", deps.environ[UNDER_BEADM])
        return 0
    return output.warnings(mgr.sync(only_if_used=args.only_if_used).warnings, err)


def cmd_migrate(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
                err: TextIO) -> int:
    return output.warnings(mgr.migrate().warnings, err)


def cmd_upgrade(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
                err: TextIO) -> int:
    def show(line: str) -> None:  # apt's output as it comes (issue 25 item 8)
        print(f"apt: {shown(line, keep_tabs=True)}", file=err, flush=True)

    done = mgr.upgrade(args.name, args.apt_args, description=args.description,
                       on_line=None if args.quiet else show)
    output.print_upgraded(done, args, mgr.backend, out=out, err=err)
    return output.warnings(done.warnings, err)


def cmd_prune(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO,
              err: TextIO) -> int:
    pruned = mgr.prune(conf.load(deps.config_path).policy)
    output.print_pruned(pruned, args, out)
    return output.warnings(pruned.warnings, err)


#: Each command that works on BEs (it gets a manager), by name.
COMMANDS: dict[str, Command] = {
    "list": cmd_list,
    "create": cmd_create,
    "destroy": cmd_destroy,
    "rename": cmd_rename,
    "mount": cmd_mount,
    "umount": cmd_umount,
    "init": cmd_init,
    "activate": cmd_activate,
    "trial-boot": cmd_trial_boot,
    "check": cmd_check,
    "sync": cmd_sync,
    "migrate": cmd_migrate,
    "upgrade": cmd_upgrade,
    "prune": cmd_prune,
}

#: The commands that need neither a manager nor root (apt-hook checks root itself, once
#: it knows it has something to do).
WITHOUT_MANAGER: dict[str, Plain] = {
    "version": cmd_version,
    "apt-hook": cmd_apt_hook,
}


def command(name: str) -> str:
    """The command a command-line word names (an alias resolved)."""
    return ALIASES.get(name, name)
