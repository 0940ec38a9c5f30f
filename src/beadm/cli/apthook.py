"""``beadm apt-hook``: what apt runs before dpkg (``DPkg::Pre-Install-Pkgs``, see
``hooks/99beadm``). Imported only for that command; :mod:`beadm.aptinfo` only once the
hook is on."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

from beadm import config as conf
from beadm.cli import output
from beadm.cli.deps import Deps, build_manager
from beadm.errors import UnsupportedError
from beadm.runner import UNDER_BEADM

log = logging.getLogger("beadm")


def run(args: argparse.Namespace, deps: Deps, out: TextIO, err: TextIO) -> int:
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
    # the configured backend: a BE the prune lets go takes its boot entries with it
    mgr = build_manager(args, deps, out, err)
    done = mgr.auto_snapshot(
        description=aptinfo.describe(changes) if changes else "apt",
        important=aptinfo.importance(changes),
        run=aptinfo.run_key(deps.proc),
        policy=config.policy,
    )
    if not mgr.runner.dry_run:
        what = "already taken in this apt run" if done.same_run else "taken"
        print(f"beadm: automatic snapshot {done.snapshot} {what}", file=out)
    verb = "would destroy" if mgr.runner.dry_run else "destroyed"
    for b in done.pruned.bes:
        if b.destroy:
            print(f"beadm: {verb} BE {b.be.name} ({b.reason})", file=out)
    for d in done.pruned.decisions:
        if d.destroy and d.snap.be not in {b.be.name for b in done.pruned.bes if b.destroy}:
            print(f"beadm: {verb} {d.snap.name} ({d.reason})", file=out)
    return output.warnings(done.warnings, err)

