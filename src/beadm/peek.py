"""Looking into a BE that is not running: a temporary read-only mount of the datasets that
hold the paths asked for (a query: it runs in dry-run mode too, and is gone afterwards).

Used by the destroy guard (:mod:`beadm.vzguard`, ``/var/lib/vz``) and the activate guard
(:mod:`beadm.rollback_guard`, ``/etc``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from beadm import confined
from beadm import mounts as mnt
from beadm.runner import Runner
from beadm.zfs import Zfs

#: A BE's mount plan: (dataset, path relative to the BE's top), parents first.
Plan = Sequence[tuple[str, str]]


def _holds(rel: str, path: str) -> bool:
    """Whether a dataset mounted at ``rel`` (relative to the BE's top, "" = the top) can
    hold (part of) ``path``: it is at or above it, or below it."""
    if not rel:
        return True
    rel = rel.rstrip("/")
    return path == rel or path.startswith(rel + "/") or rel.startswith(path.rstrip("/") + "/")


def relevant(plan: Plan, paths: Sequence[str]) -> list[tuple[str, str]]:
    """The part of a mount plan that any of ``paths`` can be on: the BE's top and the
    datasets at or above one of them, or below it."""
    return [(ds, rel) for ds, rel in plan if any(_holds(rel, p) for p in paths)]


@contextmanager
def look_into(
    runner: Runner, plan: Plan, mounts: Sequence[mnt.Mount], paths: Sequence[str],
    *, view: Callable[[], Path | None] | None = None,
) -> Iterator[Path]:
    """The BE of ``plan`` as a directory, with at least ``paths`` (absolute, as inside the
    BE) as the BE has them: where the BE is mounted already; else, when only the BE's
    root dataset holds them and ``view`` gives a mount of it (the backend's session has
    the BE mounted for the same command: one mount, not two), there; else a temporary
    read-only mount of the datasets that hold them."""
    where = mnt.zfs_mounts(list(mounts))
    top = plan[0][0]
    if top in where:
        yield Path(where[top][-1])
        return
    needed = relevant(plan, paths)
    if view is not None and [ds for ds, _ in needed] == [top]:
        got = view()
        if got is not None:
            yield got
            return
    tmp = tempfile.mkdtemp(prefix="beadm-")
    done: list[str] = []
    try:
        for ds, rel in needed:
            target = tmp + rel
            try:  # mount(8) follows a link: never one out of the BE (beadm.confined)
                confined.mount_point(Path(tmp), rel)
            except OSError:
                continue  # no directory to mount it on in the read-only parent
            Zfs(runner).mount_at(ds, target, ro=True, readonly=True)
            done.append(target)
        yield Path(tmp)
    finally:
        for target in reversed(done):
            runner.run(["umount", target], readonly=True, check=False)
        with suppress(OSError):
            Path(tmp).rmdir()
