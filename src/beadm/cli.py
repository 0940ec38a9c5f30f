"""The ``beadm`` command line: parses arguments, calls :mod:`beadm.be`, prints results.

It never runs ``zfs`` itself. Every error below it is a :class:`beadm.errors.BeadmError`,
mapped here, in :func:`main`, to one line ``beadm: <message>`` on stderr and its exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

# Only what every command needs is imported here; a module one command needs (json,
# apt's hook input, the health checks, the retention policy, ...) is imported where
# that command runs: start-up time is most of a short command's time (issue 15).
from beadm import __version__, chroot
from beadm import config as conf
from beadm import watchdog as wd
from beadm.backend import BootBackend
from beadm.be import BeManager
from beadm.errors import (
    BeadmError,
    BootError,
    InterruptedByUser,
    NotFoundError,
    RefusedError,
    UnsupportedError,
    UsageError,
)
from beadm.lock import HOOK_WAIT_SECONDS, LOCK_PATH, Lock
from beadm.mounts import MOUNTINFO
from beadm.record import field, record
from beadm.registry import backends, make_backend
from beadm.runner import UNDER_BEADM, Runner, SubprocessRunner
from beadm.zfs import Dataset

if TYPE_CHECKING:
    from beadm.be import BeInfo, Listing, Pruned
    from beadm.rollback_guard import Report

log = logging.getLogger("beadm")

SORT_KEYS = ("date", "name", "space")

LIST_JSON_SCHEMA = """\
--json prints one object:
  {"root": "rpool/ROOT", "pool": "rpool", "bootfs": "rpool/ROOT/pve-1",
   "warnings": [str, ...],                  # from the boot backend
   "bes": [{"name": str, "dataset": str,
            "active": str,                  # "N", "R", "T" combined, or "-"
            "running": bool, "next_boot": bool, "once": bool,
            "trial_tries": int | null,      # a trial boot (activate --trial): tries left
            "mountpoint": str | null,       # where the BE is mounted now
            "space": int,                   # bytes, snapshots included
            "space_without_snapshots": int, # bytes
            "created": int,                 # seconds since the epoch
            "description": str,
            "state": "failed" | "upgrading" | "creating" | "destroying" | "renaming" | null,
                                            # failed: an upgrade failed in it; creating,
                                            # destroying: half-made or half-destroyed (the
                                            # next changing command removes it)
            "origin": str | null,           # origin snapshot of the BE root
            "kernel_pin": {"kver": str, "next_boot_only": bool, "present": bool} | null,
                                            # proxmox-boot-tool kernel pin (running BE only)
            "datasets": [{"name", "mountpoint", "canmount", "used", "created",
                          "origin"}, ...],  # the BE root first
            "snapshots": [{"name", "used", "created"}, ...],
            # what booting the BE instead of the running one changes (each BE is
            # mounted read-only for it; null when no BE runs, [] for the running BE):
            "cluster_guard": [str, ...] | null, # why activate refuses it without --force
            "network_drift": [str, ...] | null  # network/identity files that differ
           }, ...]}"""


UPGRADE_JSON_SCHEMA = """\
--json prints one object:
  {"be": str, "dataset": str,      # the new BE (ready to try; nothing boots it yet)
   "source": str,                  # the running BE it was cloned from
   "apt_args": [str, ...], "dry_run": bool,
   "changes": [{"kind": "upgraded" | "installed" | "removed", "package": str,
                "old": str | null, "new": str | null}, ...]}"""


PRUNE_JSON_SCHEMA = """\
--json prints one object:
  {"pool": "rpool", "pool_free": int, "pool_size": int,   # bytes, before pruning
   "policy": {"keep": int, "keep_important": int, "pool_min_free": str,
              "esp_min_free": str},
   "floor": int,                                         # bytes
   "esps": [{"uuid": str, "size": int, "free": int,     # null: unknown or not looked at
             "floor": int, "free_after": int}, ...] | null,
   "dry_run": bool,
   "bes": [{"name": str, "created": int, "used": int, "important": str,
            "pinned": bool, "failed": bool, "held": str,
            "destroy": bool, "reason": str}, ...],       # automatic ones, newest first
   "snapshots": [{"name": str, "be": str, "created": int, "used": int,
                  "important": str, "pinned": bool, "clones": [str, ...],
                  "destroy": bool, "reason": str}, ...]}   # automatic ones, newest first"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line through the error mapping, not exit(2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS, else the terminal's width, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__
        try:
            columns = 0 if stdout is None else os.get_terminal_size(stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter with the width argparse computes, but without importing
    :mod:`shutil` for it (bz2, lzma, ...), which argparse does for every argument it adds:
    start-up time of every command (issue 15)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


def _examples(*lines: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (also walked by the docs tests)."""
    fmt = _Formatter
    p = _Parser(
        prog="beadm",
        description="Boot environments (BEs) for Proxmox VE hosts with a ZFS root.",
        epilog=_examples(
            "beadm create -d 'before upgrade' pve-2",
            "beadm activate pve-2",
            "beadm list",
        )
        + "\n\nexit status: 0 ok, 1 error, 2 usage, 3 not found, 4 exists, 5 refused,"
        "\n6 locked, 7 unsupported, 8 boot (ESP) error, 9 command failed, 130 interrupted",
        formatter_class=fmt,
    )
    p.add_argument("-n", "--dry-run", action="store_true", help="print commands, change nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    p.add_argument("--root", metavar="DATASET", help="BE root (default: parent of the / dataset)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", *backends()],
        help="boot backend (default: auto: on proxmox-boot hosts systemd-boot or grub, as "
             "the ESPs boot; a mixed host is refused; else none)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(name: str, help_: str, example: str, aliases: Sequence[str] = ()) -> _Parser:
        sp: _Parser = sub.add_parser(
            name,
            aliases=list(aliases),
            help=help_,
            description=help_,
            epilog=_examples(example),
            formatter_class=fmt,
        )
        return sp

    sp = cmd("list", "list BEs (Active: N now, R next boot, T next boot only)", "beadm list -s")
    sp.epilog = f"{sp.epilog}\n\n{LIST_JSON_SCHEMA}"
    sp.add_argument("-a", dest="all", action="store_true", help="show datasets and snapshots")
    sp.add_argument("-s", dest="snapshots", action="store_true", help="show snapshots")
    sp.add_argument("-D", dest="nosnap", action="store_true", help="space without snapshots")
    sp.add_argument("-H", dest="script", action="store_true", help="tab-separated, no header")
    sp.add_argument("--json", action="store_true", help="JSON (schema below)")
    sp.add_argument("-k", dest="sort", choices=SORT_KEYS, help="sort ascending (default date)")
    sp.add_argument("-K", dest="rsort", choices=SORT_KEYS, help="sort descending")
    sp.add_argument("name", nargs="?", metavar="NAME", help="list only this BE")

    sp = cmd(
        "create",
        "create a BE (clone of the running BE, or of -e), or a BE snapshot NAME@snap",
        "beadm create -e pve-1@before -d 'test kernel 6.8' pve-3",
    )
    sp.add_argument("-e", dest="source", metavar="BE|BE@snap", help="clone this BE or snapshot")
    sp.add_argument("-d", dest="description", default="", metavar="DESCRIPTION")
    sp.add_argument(
        "-o", dest="props", action="append", default=[], metavar="property=value",
        help="set a property on the new BE (repeatable)",
    )  # fmt: skip
    sp.add_argument("name", metavar="NAME|NAME@snap")

    sp = cmd("destroy", "destroy a BE or a BE snapshot", "beadm destroy -F pve-old")
    sp.add_argument("-F", dest="force", action="store_true", help="do not ask for confirmation")
    sp.add_argument("-o", dest="origin", action="store_true", help="also destroy the origin")
    sp.add_argument("name", metavar="NAME|NAME@snap")

    sp = cmd("rename", "rename a BE (not the running one)", "beadm rename pve-2 pve-stable")
    sp.add_argument("old", metavar="OLD")
    sp.add_argument("new", metavar="NEW")

    sp = cmd("mount", "mount a BE and its child datasets", "beadm mount pve-2 /mnt/pve-2")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("directory", nargs="?", metavar="DIR", help="default: a new directory")

    sp = cmd("umount", "unmount a BE mounted by 'mount'", "beadm umount pve-2", ["unmount"])
    sp.add_argument("-f", dest="force", action="store_true", help="force (umount -f)")
    sp.add_argument("target", metavar="NAME|DIR")

    sp = cmd("init", "adopt an existing dataset as a BE (default: the running one)", "beadm init")
    sp.add_argument("--shared-state", action="store_true",
                    help="move Proxmox state out of the running BE into datasets every BE "
                         "shares (see beadm(8), SHARED STATE)")
    sp.add_argument("name", nargs="?", metavar="NAME")

    sp = cmd("activate", "make a BE boot next", "beadm activate --trial pve-2")
    how = sp.add_mutually_exclusive_group()
    how.add_argument("-t", dest="temporary", action="store_true", help="next boot only")
    how.add_argument("--trial", action="store_true",
                     help="boot it next with counted tries; it becomes the default only "
                          "after a boot that passes the health checks, else the running BE "
                          "boots again by itself (beadm(8), TRIAL BOOTS)")
    sp.add_argument("--tries", type=int, default=3, metavar="N",
                    help="with --trial: boots to try, 1 to 9 (3)")
    sp.add_argument("--watchdog", type=int, default=None, metavar="SECONDS",
                    help=f"with --trial: reset a trial boot that hangs, SECONDS after the "
                         f"watchdog loads early in the boot, unless it was confirmed; "
                         f"{wd.MIN} to {wd.MAX}, 0 = off ({wd.DEFAULT})")
    sp.add_argument("--force", action="store_true",
                    help="activate a BE that can break the Proxmox cluster (older than the "
                         "cluster join or the node's removal, other corosync config)")
    sp.add_argument("name", metavar="NAME")

    cmd("check", "report drift between ESPs, ZFS and the BEs' cmdline and ESP list "
        "(exit 1 if any)", "beadm check")
    sp = cmd("sync", "repair what check reports", "beadm sync")
    sp.add_argument("--if-used", dest="only_if_used", action="store_true",
                    help="do nothing until beadm has written boot entries "
                         "(what the kernel and initramfs hooks run)")
    sp = cmd("prune", "destroy the automatic snapshots and BEs the retention policy lets go",
             "beadm prune -n -v")
    sp.epilog = f"{sp.epilog}\n\n{PRUNE_JSON_SCHEMA}"
    sp.add_argument("--json", action="store_true", help="JSON (schema below)")
    # also after the command (beadm prune -n -v), as the issue and users write it
    sp.add_argument("-n", "--dry-run", action="store_true", default=argparse.SUPPRESS,
                    help="show what would go, change nothing (same as beadm -n prune)")
    sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                    help="also list what is kept, and why")
    sp = cmd("upgrade", "clone the running BE and run apt-get in the clone (chroot): "
             "the new BE is ready to try, nothing boots it yet",
             "beadm upgrade pve-2 -- install -y proxmox-kernel-6.8")
    sp.usage = "beadm upgrade [-h] [-n] [-v] [--json] [-d DESCRIPTION] [NAME] [-- APT-ARGS...]"
    sp.epilog = (f"{sp.epilog}\n\nAPT-ARGS (default: full-upgrade -y) go to apt-get in the new "
                 "BE, after --;\nrun 'apt update' first (the clone has the running BE's "
                 f"package lists).\n\n{UPGRADE_JSON_SCHEMA}")
    sp.add_argument("-d", dest="description", default="", metavar="DESCRIPTION",
                    help="description of the new BE (default: what apt-get was asked)")
    sp.add_argument("--json", action="store_true", help="JSON (schema below)")
    sp.add_argument("-n", "--dry-run", action="store_true", default=argparse.SUPPRESS,
                    help="print what would run, change nothing (same as beadm -n upgrade)")
    sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                    help="log every command and apt's output")
    sp.add_argument("name", nargs="?", metavar="NAME",
                    help="the new BE (default: upgrade-YYYYmmdd-HHMMSS)")
    cmd("apt-hook", "what apt runs before dpkg: with auto_snapshot = yes in beadm.conf, "
        "snapshot the running BE (apt's action list on stdin), then prune",
        "beadm -n apt-hook </dev/null")
    cmd("migrate", "convert boot files of older beadm versions", "beadm migrate")
    sp = cmd("trial-boot", "settle a pending trial boot (run by beadm-trial.service at boot)",
             "beadm trial-boot --no-reboot")
    sp.add_argument("--no-reboot", dest="reboot", action="store_false",
                    help="when a check fails, restore the previous default but do not reboot")
    cmd("version", "print the version", "beadm version")
    return p


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
BOOT_CHANGING = frozenset({"create", "destroy", "rename", "init", "activate", "sync",
                           "migrate", "trial-boot", "upgrade"})


def main(argv: list[str] | None = None, *, deps: Deps | None = None) -> int:
    """Run beadm; return the exit status (errors mapped here, one line each)."""
    deps = deps if deps is not None else Deps()
    out = deps.stdout if deps.stdout is not None else sys.stdout
    err = deps.stderr if deps.stderr is not None else sys.stderr
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("beadm: %(message)s"))
    root_log = logging.getLogger("beadm")
    root_log.addHandler(handler)
    propagate, root_log.propagate = root_log.propagate, False
    try:
        try:
            args = _parse(list(sys.argv[1:] if argv is None else argv))
        except SystemExit as exc:  # --help
            return exc.code if isinstance(exc.code, int) else 0
        root_log.setLevel(logging.DEBUG if args.verbose else logging.WARNING)
        if args.dry_run and getattr(args, "json", False):
            # a dry run's plan ("would ...", also a backend's) on stderr: stdout is the JSON
            with contextlib.redirect_stdout(err):
                return _dispatch(args, deps, out, err, plan=err)
        return _dispatch(args, deps, out, err)
    except BeadmError as exc:
        print(f"beadm: {shown(' '.join(exc.message.split()))}", file=err)
        return exc.exit_code
    except OSError as exc:
        print(f"beadm: {shown(str(exc))}", file=err)
        return 1
    except KeyboardInterrupt:
        stop = InterruptedByUser("interrupted")
        print(f"beadm: {stop.message}", file=err)
        return stop.exit_code
    except Exception as exc:  # a bug: still one line, never a traceback (-v logs it)
        log.debug("internal error", exc_info=True)
        print(f"beadm: internal error: {type(exc).__name__}: {shown(str(exc))}", file=err)
        return 1
    finally:
        root_log.removeHandler(handler)
        root_log.propagate = propagate


def _parse(words: list[str]) -> argparse.Namespace:
    """The arguments; for ``upgrade`` only, what follows the first ``--`` is apt's. The
    command is known only once parsed (a BE may be named "upgrade"): the words before the
    ``--`` are parsed first, and for any other command the whole line is parsed again, so
    that ``--`` ends the options as usual and a stray word after it is a usage error."""
    parser = build_parser()
    if "--" in words:
        cut = words.index("--")
        try:
            head = parser.parse_known_args(words[:cut])[0]
        except UsageError:
            head = None  # not a whole upgrade command line: the full parse says why
        if head is not None and head.command == "upgrade":
            args = parser.parse_args(words[:cut])
            args.apt_args = words[cut + 1 :]
            return args
    args = parser.parse_args(words)
    args.apt_args = []
    return args


def _dispatch(args: argparse.Namespace, deps: Deps, out: TextIO, err: TextIO, *,
              plan: TextIO | None = None) -> int:
    if args.command == "version":
        print(f"beadm {__version__}", file=out)
        return 0
    if args.command == "apt-hook":
        return _apt_hook(args, deps, out, err)
    if deps.euid() != 0:
        raise UnsupportedError("must be run as root")
    if args.command in BOOT_CHANGING and "@" not in str(getattr(args, "name", "") or "") \
            and deps.in_chroot():
        if args.command == "sync" and args.only_if_used:
            print("beadm: in a chroot: boot entries are not touched from here (the beadm "
                  "outside, e.g. 'beadm upgrade', writes them)", file=err)
            return 0
        raise RefusedError(f"{args.command}: refused in a chroot (/ is not init's root): it "
                           "changes what boots; run it outside the chroot")
    runner = deps.make_runner(args.dry_run, plan or out)
    backend = deps.make_backend(args.backend, runner)
    mgr = BeManager(
        runner,
        backend,
        root=args.root,
        mountinfo=deps.mountinfo,
        lock=_lock(args, deps, err),
        running_root=deps.running_root,
        out=plan or out,
    )
    rc = _command(mgr, args, deps, out, err)
    # Non-fatal notes of the backend's last hook (e.g. an EFI variable write refused).
    # (list prints the warnings of boot_state itself.)
    notes = getattr(backend, "warnings", None) or []
    for note in notes if args.command != "list" else []:
        print(f"beadm: warning: {note}", file=err)
    return rc


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


def _command(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO, err: TextIO) -> int:
    cmd = args.command
    if cmd == "list":
        _list(mgr, args, out, err)
    elif cmd == "create":
        made = mgr.create(
            args.name, source=args.source, description=args.description, props=args.props
        )
        if args.verbose:
            print(f"created {made if isinstance(made, str) else made.name}", file=err)
    elif cmd == "destroy":
        _destroy(mgr, args, deps, out)
    elif cmd == "rename":
        mgr.rename(args.old, args.new)
    elif cmd == "mount":
        print(mgr.mount(args.name, args.directory), file=out)
    elif cmd in ("umount", "unmount"):
        mgr.umount(args.target, force=args.force)
    elif cmd == "init":
        mgr.init(args.name)
        _shared_state(mgr, args, out, err)
    elif cmd == "activate":
        report = functools.partial(_print_report, force=args.force, err=err)
        if args.trial:
            mgr.activate_trial(args.name, tries=args.tries, force=args.force,
                               watchdog=wd.DEFAULT if args.watchdog is None else args.watchdog,
                               on_report=report)
        elif args.tries != 3:
            raise UsageError("--tries goes with --trial")
        elif args.watchdog is not None:
            raise UsageError("--watchdog goes with --trial")
        else:
            mgr.activate(args.name, temporary=args.temporary, force=args.force,
                         on_report=report)
    elif cmd == "trial-boot":
        _trial_boot(mgr, args, deps, out)
    elif cmd == "check":
        problems = mgr.check()
        for line in problems:
            print(line, file=out)
        for note in getattr(mgr.backend, "notes", None) or []:
            print(f"beadm: note: {note}", file=err)
        return 1 if problems else 0
    elif cmd == "sync":
        if args.only_if_used and deps.environ.get(UNDER_BEADM):
            # a hook run by a command that beadm itself runs under its lock (a refresh):
            # that beadm re-asserts the boot defaults when it is done; waiting would hang
            logging.getLogger("beadm").debug(
                "sync --if-used under beadm (pid %s): nothing to do", deps.environ[UNDER_BEADM])
            return 0
        mgr.sync(only_if_used=args.only_if_used)
    elif cmd == "migrate":
        mgr.migrate()
    elif cmd == "upgrade":
        _upgrade(mgr, args, out, err)
    elif cmd == "prune":
        _print_pruned(mgr.prune(conf.load(deps.config_path).policy), args, out)
    return 0


def _upgrade(mgr: BeManager, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    done = mgr.upgrade(args.name, args.apt_args, description=args.description)
    dry = bool(args.dry_run)
    if args.json:
        import json

        json.dump({"be": done.be.name, "dataset": done.be.dataset, "source": done.source,
                   "apt_args": list(done.apt_args), "dry_run": dry,
                   "changes": [{"kind": c.kind, "package": c.package, "old": c.old,
                                "new": c.new} for c in done.changes]}, out, indent=2)
        out.write("\n")
        return
    for c in done.changes:
        print(shown(c.line()), file=out)
    if dry:
        return
    if not done.changes:
        print(f"beadm: apt changed no package in BE {done.be.name}", file=err)
    # suggest what works on this host: no trial boots on GRUB (activate --trial exits 7)
    how = (f"'beadm activate --trial {done.be.name}' and reboot to try it"
           if mgr.backend.trials() else
           f"'beadm activate -t {done.be.name}' and reboot to try it once")
    print(f"BE {done.be.name} is ready (cloned from {done.source}, which keeps running and "
          f"booting): {how}", file=out)


def _trial_boot(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO) -> None:
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


def _apt_hook(args: argparse.Namespace, deps: Deps, out: TextIO, err: TextIO) -> int:
    """apt's DPkg::Pre-Install-Pkgs: read its whole action list first (apt writes it to a
    pipe), then nothing unless auto_snapshot = yes; never waits long for the lock."""
    from beadm import aptinfo

    stdin = deps.stdin if deps.stdin is not None else sys.stdin
    try:
        text = stdin.read()
    except (OSError, UnicodeDecodeError):
        text = ""
    config = conf.load(deps.config_path)
    if not config.auto_snapshot:
        log.debug("auto_snapshot is off in %s", deps.config_path)
        return 0
    if deps.environ.get(UNDER_BEADM):
        log.debug("apt run by beadm (pid %s): no snapshot", deps.environ[UNDER_BEADM])
        return 0
    if deps.in_chroot():
        log.debug("apt in a chroot: no snapshot (the running BE is not this root)")
        return 0
    changes = aptinfo.parse(text)
    if text.strip() and not aptinfo.changes_packages(changes):
        log.debug("this dpkg session only configures packages: no snapshot")
        return 0
    if deps.euid() != 0:
        raise UnsupportedError("must be run as root")
    runner = deps.make_runner(args.dry_run, out)
    # the configured backend: a BE the prune lets go takes its boot entries with it
    mgr = BeManager(runner, deps.make_backend(args.backend, runner), root=args.root,
                    mountinfo=deps.mountinfo, lock=Lock(deps.lock_path, deps.lock_wait))
    done = mgr.auto_snapshot(
        description=aptinfo.describe(changes) if changes else "apt",
        important=aptinfo.importance(changes),
        run=aptinfo.run_key(deps.proc),
        policy=config.policy,
    )
    if not runner.dry_run:
        what = "already taken in this apt run" if done.same_run else "taken"
        print(f"beadm: automatic snapshot {done.snapshot} {what}", file=out)
    verb = "would destroy" if runner.dry_run else "destroyed"
    for b in done.pruned.bes:
        if b.destroy:
            print(f"beadm: {verb} BE {b.be.name} ({b.reason})", file=out)
    for d in done.pruned.decisions:
        if d.destroy and d.snap.be not in {b.be.name for b in done.pruned.bes if b.destroy}:
            print(f"beadm: {verb} {d.snap.name} ({d.reason})", file=out)
    return 0


def _print_pruned(pruned: Pruned, args: argparse.Namespace, out: TextIO) -> None:
    dry = bool(args.dry_run)
    policy = pruned.policy
    gone = {b.be.name for b in pruned.bes if b.destroy}
    if args.json:
        import json

        json.dump({
            "pool": pruned.pool,
            "pool_free": pruned.space.free,
            "pool_size": pruned.space.size,
            "policy": {"keep": policy.keep, "keep_important": policy.keep_important,
                       "pool_min_free": str(policy.pool_min_free),
                       "esp_min_free": str(policy.esp_min_free)},
            "floor": policy.pool_min_free.of(pruned.space.size),
            "esps": None if pruned.esps is None else [
                {"uuid": e.uuid, "size": e.size, "free": e.free,
                 "floor": policy.esp_min_free.of(e.size),
                 "free_after": pruned.esp_free_after(e)}
                for e in pruned.esps],
            "dry_run": dry,
            "bes": [
                {"name": b.be.name, "created": b.be.created, "used": b.be.used,
                 "important": b.be.important, "pinned": b.be.pinned, "failed": b.be.failed,
                 "held": b.be.held, "destroy": b.destroy, "reason": b.reason}
                for b in pruned.bes
            ],
            "snapshots": [
                {"name": d.snap.name, "be": d.snap.be, "created": d.snap.created,
                 "used": d.snap.used, "important": d.snap.important,
                 "pinned": d.snap.pinned, "clones": list(d.snap.clones),
                 "destroy": d.destroy, "reason": d.reason}
                for d in pruned.decisions
            ],
        }, out, indent=2)
        out.write("\n")
        return

    def action(destroy: bool) -> str:
        return ("would destroy" if dry else "destroyed") if destroy else "keep"

    be_rows = [[shown(b.be.name), _when(b.be.created), human(b.be.used), action(b.destroy),
                b.reason] for b in pruned.bes if b.destroy or args.verbose]
    rows = [[shown(d.snap.name), _when(d.snap.created), human(d.snap.used), action(d.destroy),
             d.reason] for d in pruned.decisions
            if (d.destroy or args.verbose) and (args.verbose or d.snap.be not in gone)]
    if be_rows:
        _table(out, ["BE", "Created", "Used", "Action", "Reason"], be_rows, script=False)
    if rows:
        if be_rows:
            print(file=out)
        _table(out, ["Snapshot", "Created", "Used", "Action", "Reason"], rows, script=False)
    if args.verbose and pruned.esps is not None:
        for e in pruned.esps:
            after = pruned.esp_free_after(e)
            floor = policy.esp_min_free
            shown_floor = str(floor) if floor.percent is None else \
                f"{floor} = {human(floor.of(e.size))}"
            print(f"ESP {e.uuid}: {human(e.free)} free of {human(e.size)}"
                  + (f", {human(after)} after" if after != e.free else "")
                  + f" (esp_min_free {shown_floor})", file=out)
    if not (rows or be_rows) and args.verbose:
        print("no automatic snapshots or BEs", file=out)


def _destroy(mgr: BeManager, args: argparse.Namespace, deps: Deps, out: TextIO) -> None:
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
    mgr.destroy(args.name, origin=args.origin, force=args.force)


def _shared_state(mgr: BeManager, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    """init: move the Proxmox state (--shared-state), or say in one line that it is inside."""
    found = [f for f in mgr.shared_state(move=args.shared_state, out=out) if f.to_move]
    if not found:
        return
    if not args.shared_state:
        paths = ", ".join(f.path for f in found)
        print(f"beadm: note: {paths} would go back in time with the BE; "
              "'beadm init --shared-state' moves them to datasets all BEs share", file=err)
    elif not mgr.runner.dry_run:
        for f in found:
            print(f"{f.path}: now on {f.dataset}", file=out)


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


# -- list output ----------------------------------------------------------------------


def shown(text: str, *, keep_tabs: bool = False) -> str:
    """``text`` safe to print on one line: every unprintable character (control
    characters, line separators, undecodable bytes kept as lone surrogates) escaped;
    tabs too unless ``keep_tabs``."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable() or (keep_tabs and c == "\t"):
            out.append(c)
        elif 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return "".join(out)


def human(n: int) -> str:
    """Bytes the way ``zfs list`` shows them (1024-based, three significant digits)."""
    if n < 1024:
        return f"{n}B"
    value = float(n)
    for unit in "KMGTPE":
        value /= 1024
        if value < 1024 or unit == "E":
            break
    if value < 10:
        return f"{value:.2f}{unit}"
    if value < 100:
        return f"{value:.1f}{unit}"
    return f"{value:.0f}{unit}"


def _when(epoch: int) -> str:
    # time (built in), not datetime (an import for list): the same local time and format
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def _sorted(infos: Sequence[BeInfo], key: str | None, reverse: bool) -> list[BeInfo]:
    def k(i: BeInfo) -> tuple[Any, str]:
        if key == "name":
            return (i.be.name, i.be.name)
        if key == "space":
            return (i.be.space, i.be.name)
        return (i.be.root.creation, i.be.name)

    return sorted(infos, key=k, reverse=reverse)


def _list(mgr: BeManager, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    if args.sort and args.rsort:
        raise UsageError("list: -k and -K are exclusive")
    if args.json and args.script:
        raise UsageError("list: --json and -H are exclusive")
    listing = mgr.listing(snapshots=args.all or args.snapshots or args.json,
                          bootfs=args.json)
    infos = list(listing.bes)
    if args.name is not None:
        infos = [i for i in infos if i.be.name == args.name]
        if not infos:
            raise NotFoundError(f"BE {args.name} does not exist under {listing.root}")
    infos = _sorted(infos, args.rsort or args.sort, reverse=bool(args.rsort))
    for w in listing.state.warnings:
        print(f"beadm: warning: {w}", file=err)
    for pin in listing.state.pins:
        print(f"beadm: note: {pin.describe()}", file=err)
    if args.json:
        import json

        reports = mgr.rollback_reports([i.be for i in infos])
        json.dump(_json(listing, infos, reports), out, indent=2)
        out.write("\n")
        return
    rows: list[list[str]] = []
    for i in infos:
        space = i.be.space_without_snapshots if args.nosnap else i.be.space
        rows.append(
            [
                i.be.name,
                i.active,
                shown(i.mounted_at or "-"),
                human(space),
                _when(i.be.root.creation),
                (f"[{i.state}] " if i.state else "") + (shown(i.be.description) or "-"),
            ]
        )
        if args.all:
            for d in i.be.datasets:
                rows.append(_sub_row(d, args.nosnap))
        if args.all or args.snapshots:
            for s in i.be.snapshots:
                rows.append(_sub_row(s, args.nosnap, i.be.description))
    header = ["BE", "Active", "Mountpoint", "Space", "Created", "Description"]
    if args.all or args.snapshots:
        header[0] = "BE/Dataset/Snapshot"
    _table(out, header, rows, script=args.script)


def _sub_row(d: Dataset, nosnap: bool, inherited: str | None = None) -> list[str]:
    """A dataset or snapshot row. A snapshot shows its description only where it is its
    own (the apt hook's "apt: upgrade ..."), not the BE's, which it inherits."""
    space = d.used - d.usedbysnapshots if nosnap else d.used
    where = shown(d.mountpoint) if (d.mounted and d.mountpoint) else "-"
    own = d.description if inherited is not None and d.description != inherited else ""
    return ["  " + d.name, "-", where, human(space), _when(d.creation), shown(own) or "-"]


def _table(out: TextIO, header: list[str], rows: list[list[str]], *, script: bool) -> None:
    if script:
        for r in rows:
            print("\t".join(c.strip() for c in r), file=out)
        return
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        cells = [v.ljust(widths[c]) for c, v in enumerate(r)]
        print("  ".join(cells).rstrip(), file=out)


def _json(
    listing: Listing, infos: list[BeInfo], reports: Mapping[str, Report | None]
) -> dict[str, Any]:
    pins = {p.be: {"kver": p.kver, "next_boot_only": p.once, "present": p.present}
            for p in listing.state.pins}

    def guard(name: str) -> list[str] | None:
        r = reports.get(name)
        return None if r is None else list(r.cluster)

    def drift(name: str) -> list[str] | None:
        r = reports.get(name)
        return None if r is None else [d.path for d in r.drift]

    return {
        "root": listing.root,
        "pool": listing.pool,
        "bootfs": listing.bootfs or None,
        "warnings": list(listing.state.warnings),
        "bes": [
            {
                "name": i.be.name,
                "dataset": i.be.dataset,
                "active": i.active,
                "running": i.running,
                "next_boot": i.next_boot,
                "once": i.once,
                "trial_tries": listing.state.trial_tries if i.be.name == listing.state.trial
                else None,
                "mountpoint": i.mounted_at,
                "space": i.be.space,
                "space_without_snapshots": i.be.space_without_snapshots,
                "created": i.be.root.creation,
                "description": i.be.description,
                "state": i.state,
                "origin": i.be.root.origin or None,
                "kernel_pin": pins.get(i.be.name),
                "datasets": [
                    {
                        "name": d.name,
                        "mountpoint": d.mountpoint,
                        "canmount": d.canmount,
                        "used": d.used,
                        "created": d.creation,
                        "origin": d.origin or None,
                    }
                    for d in i.be.datasets
                ],
                "snapshots": [
                    {"name": s.name, "used": s.used, "created": s.creation} for s in i.be.snapshots
                ],
                "cluster_guard": guard(i.be.name),
                "network_drift": drift(i.be.name),
            }
            for i in infos
        ],
    }
