"""The Proxmox state shared between BEs (beadm.pvestate): ``shared-state``, and the
drop-ins a BE gets before it boots."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, TextIO

from beadm.backend import BeRef
from beadm.errors import UsageError

if TYPE_CHECKING:
    from beadm import pvestate
    from beadm.bectx import BeContext

log = logging.getLogger("beadm.be")  # the BE library's one logger, whichever verb logs


def shared_state(ctx: BeContext, *, move: bool,
                 out: TextIO | None = None) -> list[pvestate.Finding]:
    """Proxmox state inside the running BE (with ``move``: moved out; beadm.statemove)."""
    from beadm import statemove

    with ctx._changing():
        running = ctx.running_name()
        if running is None:
            if move:
                raise UsageError(f"no running BE under {ctx.root}: nothing to move from")
            return []
        mover = statemove.Mover(ctx.runner, pool=ctx.pool, be_root=ctx.root,
                                be_dataset=f"{ctx.root}/{running}",
                                mountinfo=ctx._mountinfo, out=out)
        return mover.move_all() if move else mover.findings()


def shared_state_into(ctx: BeContext, name: str, dataset: str, *, new: bool) -> None:
    """Give BE ``name`` the drop-ins of the shared state in service (beadm.pvestate), if
    it lacks them: a BE cloned from a snapshot taken before ``init --shared-state``.
    Warns once (when they are written) that its own copy of that state is not used."""
    from beadm import pvestate

    paths = pvestate.in_use(ctx.zfs.list_tree(ctx.pool, snapshots=False, depth=1),
                            ctx.pool, altroot=ctx._altroot())
    if not paths:
        return
    out = ctx._out if ctx._out is not None else sys.stdout
    if new and ctx.runner.dry_run:  # the clone does not exist: nothing to look at
        print(f"would write the shared-state drop-ins into {dataset} where missing "
              f"({', '.join(paths)} are shared datasets)", file=out)
        return
    from beadm import statedropins  # (only where a shared dataset is in service)

    done = statedropins.prepare_be(ctx.runner, dataset, paths, mountinfo=ctx._mountinfo,
                                   out=out, view=ctx._view(BeRef(name, dataset)))
    if done.written:
        log.info("BE %s: wrote %s", name, ", ".join(str(p) for p in done.written))
    if done.written and done.hidden:
        log.warning(
            "warning: BE %s keeps its own %s from before the shared-state move: not used "
            "(the shared datasets are mounted over it at boot)",
            name, ", ".join(done.hidden))
