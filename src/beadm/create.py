"""``create``: a BE cloned from another (or a snapshot of one), and ``create BE@snap``."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from beadm import shared
from beadm.backend import BeRef
from beadm.becommon import (
    STATE_CREATING,
    STATE_UPGRADING,
    _check_description,
    _check_len,
    _refuse_case_clash,
    _unprintable,
)
from beadm.errors import ExistsError, NotFoundError, UsageError
from beadm.names import check_new_be_name, split_be_snapshot
from beadm.tree import SNAP_PREFIX, BootEnv, Tree
from beadm.txn import UndoLog
from beadm.zfs import (
    PROP_APT_RUN,
    PROP_AUTO,
    PROP_DESCRIPTION,
    PROP_IMPORTANT,
    PROP_KEEP,
    PROP_STATE,
    Dataset,
    PropValue,
)

if TYPE_CHECKING:
    from beadm.bectx import BeContext

log = logging.getLogger("beadm.be")  # the BE library's one logger, whichever verb logs

#: Properties ``create -o`` may not set: beadm decides them (the clone must not mount
#: itself over ``/``) or they are beadm's own.
_OWNED_PROPS = frozenset({"canmount", "mountpoint", "origin"})

#: Properties never copied to a clone: fixed at creation or inherited from the origin.
_NOT_COPIED = frozenset(
    {
        "canmount",
        "encryption",
        "keyformat",
        "keylocation",
        "pbkdf2iters",
        "casesensitivity",
        "normalization",
        "utf8only",
        "volsize",
        "volblocksize",
        "origin",
        PROP_STATE,
        PROP_DESCRIPTION,
        # what beadm made by itself, and a pin: marks of that object, not of its clones
        PROP_AUTO,
        PROP_IMPORTANT,
        PROP_APT_RUN,
        PROP_KEEP,
    }
)


def _clone_props(
    src: Dataset,
    local: list[PropValue],
    *,
    description: str,
    user: list[tuple[str, str]],
    altroot: str = "",
) -> list[tuple[str, str]]:
    """Properties for the clone of ``src``: local/received ones copied, then beadm's own."""
    props: dict[str, str] = {}
    for pv in local:
        if pv.prop not in _NOT_COPIED and not pv.prop.startswith("org.beadm:"):
            props[pv.prop] = pv.value
    mp = props.get("mountpoint", "")
    root = altroot.rstrip("/")
    if root and (mp == root or mp.startswith(root + "/")):
        props["mountpoint"] = mp[len(root) :] or "/"
    props["canmount"] = "off" if src.canmount == "off" else "noauto"
    props[PROP_STATE] = STATE_CREATING
    if description:
        props[PROP_DESCRIPTION] = description
    for k, v in user:
        props[k] = v
    return list(props.items())


def _parse_props(props: list[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for p in props:
        key, sep, value = p.partition("=")
        if not sep or not key or any(c in key for c in " =@/") or _unprintable(key):
            raise UsageError(f"invalid -o {p!r}: expected property=value")
        if key in _OWNED_PROPS or key.startswith("org.beadm:"):
            raise UsageError(f"property {key} is beadm's own and cannot be set with -o")
        if _unprintable(value):
            raise UsageError(f"invalid -o {key}: value contains a control character")
        out.append((key, value))
    return out


def create(
    ctx: BeContext,
    name: str,
    *,
    source: str | None = None,
    description: str = "",
    props: list[str] | None = None,
) -> BeRef | str:
    """Create BE ``name`` (a clone of ``source``), or ``BE@snap`` (a snapshot).

    Returns the new BE's :class:`BeRef`, or the snapshot's full name.
    """
    if "@" in name:
        if source is not None or description or props:
            raise UsageError("create BE@snapshot takes no -e, -d or -o")
        return snapshot(ctx, name)
    check_new_be_name(name)
    if source is not None:
        split_be_snapshot(source)
    user_props = _parse_props(props or [])
    _check_description(description)
    with ctx._changing(boot=True) as tree:
        return clone_be(ctx, tree, name, source, description, user_props)


def snapshot(ctx: BeContext, spec: str) -> str:
    """``create BE@snap``: a recursive snapshot of the BE's datasets."""
    be_name, snap = split_be_snapshot(spec)
    assert snap is not None
    with ctx._changing() as tree:
        be = ctx._need(tree, be_name)
        full = f"{be.dataset}@{snap}"
        if any(tree.snapshot(f"{d.name}@{snap}") for d in be.datasets):
            raise ExistsError(f"snapshot {be_name}@{snap} already exists")
        _check_len(max((f"{d.name}@{snap}" for d in be.datasets), key=len))
        ctx.zfs.snapshot(full, recursive=True)
        return full


def pick_source(ctx: BeContext, tree: Tree, source: str | None) -> tuple[BootEnv, str | None]:
    if source is None:
        name = ctx.running_name()
        if name is None:
            bootfs = ctx._bootfs()
            if bootfs.rpartition("/")[0] == ctx.root:
                name = bootfs.rpartition("/")[2]
        if name is None or not tree.has_be(name):
            raise UsageError(f"no running BE under {ctx.root}; name the source with -e")
        return tree.be(name), None
    be_name, snap = split_be_snapshot(source)
    be = ctx._need(tree, be_name)
    if snap is not None:
        for d in be.datasets:
            if tree.snapshot(f"{d.name}@{snap}") is None:
                if d is be.root:
                    raise NotFoundError(f"snapshot {be_name}@{snap} does not exist")
                raise NotFoundError(
                    f"snapshot {d.name}@{snap} does not exist: a BE snapshot must cover "
                    "the BE's child datasets (beadm create BE@snap, or zfs snapshot -r)"
                )
    return be, snap


def new_snapname(ctx: BeContext, tree: Tree, src: BootEnv) -> str:
    base = SNAP_PREFIX + ctx._clock().strftime("%Y%m%d-%H%M%S")
    snap, n = base, 0
    while any(tree.snapshot(f"{d.name}@{snap}") for d in src.datasets):
        n += 1
        snap = f"{base}-{n}"
    return snap


def clone_be(
    ctx: BeContext,
    tree: Tree,
    name: str,
    source: str | None,
    description: str,
    user_props: list[tuple[str, str]],
    *,
    upgrading: bool = False,
) -> BeRef:
    """The clone. ``upgrading``: no boot entries yet, and the BE root ends up marked
    ``upgrading`` instead of unmarked (``upgrade`` finishes it)."""
    target = tree.be_dataset(name)
    if target in tree.fs:
        raise ExistsError(f"BE {name} already exists")
    _refuse_case_clash(name, tree.be_names())
    src, snap = pick_source(ctx, tree, source)
    made_snapshot = snap is None
    if snap is None:
        snap = new_snapname(ctx, tree, src)
    for d in src.datasets:
        _check_len(target + d.name[len(src.dataset) :])
        _check_len(f"{d.name}@{snap}")
    local: dict[str, list[PropValue]] = {}
    for pv in ctx.zfs.local_props(src.dataset):
        local.setdefault(pv.dataset, []).append(pv)
    # zfs shows mountpoints with the pool's altroot in front (a rescue import): the
    # stored value is what the clone must get.
    altroot = ctx._altroot()

    undo = UndoLog()
    try:
        if made_snapshot:
            ctx.zfs.snapshot(
                f"{src.dataset}@{snap}", recursive=True, props={PROP_STATE: STATE_CREATING}
            )
            undo.done(
                f"snapshot {src.dataset}@{snap}",
                lambda: ctx.zfs.destroy(f"{src.dataset}@{snap}", recursive=True),
            )
        clones: list[str] = []
        for d in src.datasets:
            clone = target + d.name[len(src.dataset) :]
            is_root = d is src.root
            opts = _clone_props(
                d,
                local.get(d.name, []),
                description=description if is_root else "",
                user=user_props if is_root else [],
                altroot=altroot,
            )
            ctx.zfs.clone(f"{d.name}@{snap}", clone, opts)
            clones.append(clone)
            undo.done(f"clone {clone}", functools.partial(ctx.zfs.destroy, clone))
        # Still marked: a kill from here on leaves a BE the next command removes.
        shared.shared_state_into(ctx, name, target, new=True)
        ref = BeRef(name, target, description, False)
        if not upgrading:
            undo.done(f"boot entries of {name}", lambda: ctx._warn(ctx.backend.post_destroy(ref)))
            ctx._warn(ctx.backend.post_create(ref))
        # Commit: clear the in-progress marks, in one `zfs inherit` (one process, not
        # one a dataset: issue 15). zfs clears them one by one in name order, so a kill
        # can leave any subset cleared; each is a state the next changing command
        # finishes (beadm.recovery): a BE whose root is still marked is removed with
        # its snapshot, a marked child dataset or snapshot of a finished BE is unmarked.
        marked = [f"{d.name}@{snap}" for d in src.datasets] if made_snapshot else []
        marked += [c for c in clones if not (upgrading and c == target)]
        if marked:
            ctx.zfs.inherit_all(marked, PROP_STATE)
        if upgrading:  # its mark changes last
            ctx.zfs.set(target, PROP_STATE, STATE_UPGRADING)
    except BaseException:
        if not ctx.runner.dry_run:  # a dry run did nothing: there is nothing to undo
            ctx._release()  # the undo starts from fresh ESP mounts, as a new command
            undo.rollback()
        raise
    return ref
