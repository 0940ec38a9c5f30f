"""``mount`` and ``umount`` of a BE and its child datasets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from beadm import confined
from beadm import mounts as mnt
from beadm.becommon import _mount_plan, _rmdir
from beadm.errors import NotFoundError, RefusedError
from beadm.names import check_be_name
from beadm.tree import BootEnv

if TYPE_CHECKING:
    from beadm.bectx import BeContext

log = logging.getLogger("beadm.be")  # the BE library's one logger, whichever verb logs


def mount(ctx: BeContext, name: str, directory: str | None = None) -> str:
    """Mount a BE and its children at ``directory`` (a fresh private one if None)."""
    check_be_name(name)
    with ctx._changing() as tree:
        be = ctx._need(tree, name)
        if name == ctx.running_name():
            raise RefusedError(f"BE {name} is the running BE, mounted at /")
        where = mnt.zfs_mounts(ctx.mounts())
        if be.dataset in where:
            raise RefusedError(f"BE {name} is already mounted at {where[be.dataset][-1]}")
        made_dir = False
        if directory is None:
            import tempfile

            if ctx.runner.dry_run:
                directory = str(Path(tempfile.gettempdir()) / "beadm-XXXXXXXX")
            else:
                directory = tempfile.mkdtemp(prefix="beadm-")
                made_dir = True
        else:
            path = Path(directory)
            if not path.is_dir():
                raise NotFoundError(f"directory {directory} does not exist")
            directory = str(path.resolve())
            if any(m.mountpoint == directory for m in ctx.mounts()):
                raise RefusedError(
                    f"{directory} is a mount point: mounting {name} there would hide it"
                )
            if any(path.iterdir()):
                raise RefusedError(
                    f"{directory} is not empty: mounting {name} there would hide "
                    "what it holds; use an empty directory"
                )
        done: list[str] = []
        try:
            for d, rel in _mount_plan(be):
                target = directory + rel if rel else directory
                if rel and not ctx.runner.dry_run:  # never through a link in the BE
                    confined.mount_point(Path(directory), rel, create=True)
                ctx.zfs.mount_at(d.name, target)
                done.append(target)
        except BaseException:
            for target in reversed(done):
                ctx.runner.run(["umount", target], check=False)
            if made_dir:
                _rmdir(directory)
            raise
        return directory


def umount(ctx: BeContext, target: str, *, force: bool = False) -> None:
    """Unmount a BE (named, or by the directory it is mounted at), children first."""
    with ctx._changing() as tree:
        if "/" in target:
            path = str(Path(target).resolve())
            owner = [
                m.source for m in ctx.mounts() if m.fstype == "zfs" and m.mountpoint == path
            ]
            names = [n for n in tree.be_names() if tree.be_dataset(n) in owner]
            if not names:
                raise NotFoundError(f"no BE is mounted at {path}")
            be = tree.be(names[-1])
        else:
            check_be_name(target)
            be = ctx._need(tree, target)
        if be.name == ctx.running_name():
            raise RefusedError(f"BE {be.name} is the running BE")
        if not unmount_be(ctx, be, force=force):
            raise NotFoundError(f"BE {be.name} is not mounted")


def unmount_be(ctx: BeContext, be: BootEnv, *, force: bool) -> bool:
    """Unmount every mount of the BE's datasets, deepest first. False if none."""
    inside = {d.name for d in be.datasets}
    points = [m.mountpoint for m in ctx.mounts() if m.fstype == "zfs" and m.source in inside]
    if not points:
        return False
    if "/" in points:
        raise RefusedError(f"BE {be.name} is mounted at /")
    top = [m.mountpoint for m in ctx.mounts() if m.fstype == "zfs" and m.source == be.dataset]
    for p in sorted(points, key=lambda p: (p.count("/"), p), reverse=True):
        ctx.runner.run(["umount", "-f", p] if force else ["umount", p])
    import tempfile

    for p in top:
        parent = Path(p).parent
        ours = Path(p).name.startswith("beadm-") and str(parent) == tempfile.gettempdir()
        if ours and not ctx.runner.dry_run:
            _rmdir(p)
    return True
