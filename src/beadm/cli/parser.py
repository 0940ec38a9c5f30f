"""The command line as argparse sees it: :func:`build_parser` (also walked by the docs
tests), its usage errors as :class:`beadm.errors.UsageError`, and the ``--json`` schemas
the commands' ``--help`` shows."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from beadm import __version__
from beadm import watchdog as wd
from beadm.errors import UsageError
from beadm.registry import backends

SORT_KEYS = ("date", "name", "space")

LIST_JSON_SCHEMA = """\
--json prints one object:
  {"output_version": {"command": "beadm list", "vers_major": 1, "vers_minor": 0},
   "root": "rpool/ROOT", "pool": "rpool", "bootfs": "rpool/ROOT/pve-1",
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
  {"output_version": {"command": "beadm upgrade", "vers_major": 1, "vers_minor": 0},
   "be": str, "dataset": str,      # the new BE (ready to try; nothing boots it yet)
   "source": str,                  # the running BE it was cloned from
   "apt_args": [str, ...], "dry_run": bool,
   "changes": [{"kind": "upgraded" | "downgraded" | "installed" | "removed",
                "package": str,
                "old": str | null, "new": str | null}, ...]}"""


PRUNE_JSON_SCHEMA = """\
--json prints one object:
  {"output_version": {"command": "beadm prune", "vers_major": 1, "vers_minor": 0},
   "pool": "rpool", "pool_free": int, "pool_size": int,   # bytes, before pruning
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


#: Each alias of a command, to the command (argparse gives the word typed).
ALIASES = {"unmount": "umount"}


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


#: The global options' defaults (their dests): ``beadm -n create x`` and ``beadm create
#: -n x`` are the same command line.
GLOBAL_DEFAULTS: dict[str, object] = {"dry_run": False, "verbose": False, "root": None,
                                      "backend": "auto"}


def _global_options(p: argparse.ArgumentParser, defaults: dict[str, object] | None) -> None:
    """The options every command takes, before the command (``defaults``: their values
    when not given) and after it (``None``: not set when not given, so that the command's
    parser does not overwrite what was given before it)."""

    def default(dest: str) -> object:
        return argparse.SUPPRESS if defaults is None else defaults[dest]

    g: argparse.ArgumentParser | argparse._ArgumentGroup = p
    if defaults is None:  # in each command's --help, apart from its own options
        g = p.add_argument_group("global options (also before the command)")
    g.add_argument("-n", "--dry-run", action="store_true", default=default("dry_run"),
                   help="print commands, change nothing")
    g.add_argument("-v", "--verbose", action="store_true", default=default("verbose"),
                   help="log every command run (prune: also list what is kept, and why)")
    g.add_argument("--root", metavar="DATASET", default=default("root"),
                   help="BE root (default: parent of the / dataset)")
    g.add_argument(
        "--backend",
        default=default("backend"),
        choices=["auto", *backends()],
        help="boot backend (default: auto: on proxmox-boot hosts systemd-boot or grub, as "
             "the ESPs boot; a mixed host is refused; else none)",
    )


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
    p.add_argument("--version", action="version", version=f"beadm {__version__}",
                   help="print the version and exit (as 'beadm version')")
    _global_options(p, GLOBAL_DEFAULTS)
    # the same options after the command (beadm create -n x), for every command: their
    # default there is "not given", so that one given before the command stays
    common = _Parser(add_help=False)
    _global_options(common, None)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(name: str, help_: str, example: str) -> _Parser:
        sp: _Parser = sub.add_parser(
            name,
            aliases=[alias for alias, command in ALIASES.items() if command == name],
            help=help_,
            description=help_,
            epilog=_examples(example),
            formatter_class=fmt,
            parents=[common],
        )
        return sp

    sp = cmd("list", "list BEs (Active: N now, R next boot, T next boot only)", "beadm list -s")
    sp.epilog = f"{sp.epilog}\n\n{LIST_JSON_SCHEMA}"
    sp.add_argument("-a", dest="all", action="store_true", help="show datasets and snapshots")
    sp.add_argument("-s", dest="snapshots", action="store_true", help="show snapshots")
    sp.add_argument("-D", dest="nosnap", action="store_true", help="space without snapshots")
    sp.add_argument("-H", dest="script", action="store_true", help="tab-separated, no header")
    sp.add_argument("-p", dest="parsable", action="store_true",
                    help="exact numbers: space in bytes, created in seconds since the epoch")
    sp.add_argument("-o", dest="columns", metavar="COLUMN[,COLUMN]...",
                    help="only these columns, in this order (their header names, any case: "
                         "BE, Active, Mountpoint, Space, Created, Description)")
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

    sp = cmd("umount", "unmount a BE mounted by 'mount'", "beadm umount pve-2")
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
    sp = cmd("upgrade", "clone the running BE and run apt-get in the clone (chroot): "
             "the new BE is ready to try, nothing boots it yet",
             "beadm upgrade pve-2 -- install -y proxmox-kernel-6.8")
    sp.usage = "beadm upgrade [-h] [-n] [-v] [-q] [--json] [-d DESCRIPTION] [NAME] [-- APT-ARGS...]"
    sp.epilog = (f"{sp.epilog}\n\nAPT-ARGS (default: full-upgrade -y) go to apt-get in the new "
                 "BE, after --;\nrun 'apt update' first (the clone has the running BE's "
                 f"package lists).\n\n{UPGRADE_JSON_SCHEMA}")
    sp.add_argument("-d", dest="description", default="", metavar="DESCRIPTION",
                    help="description of the new BE (default: what apt-get was asked)")
    sp.add_argument("--json", action="store_true", help="JSON (schema below)")
    sp.add_argument("-q", "--quiet", action="store_true",
                    help="do not show apt's output (shown as it comes on stderr, each line "
                         "after 'apt: ')")
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
