"""The context every BE verb runs over: the injected runner (releasing the backend's
session before host-namespace commands), ``zfs``, the backend and its one session per
command, the lock, where BEs live (BE root, pool, running BE, bootfs) and
:meth:`BeContext._changing`, the one way a changing command starts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from beadm import mounts as mnt
from beadm.backend import BeRef, BootBackend, Warnings
from beadm.becommon import _now
from beadm.errors import NotFoundError, RefusedError, UnsupportedError, UsageError
from beadm.lock import Lock
from beadm.runner import LineSink, Result, Runner
from beadm.tree import BootEnv, Tree
from beadm.zfs import Zfs

if TYPE_CHECKING:
    import datetime as dt

    from beadm import aptchroot

#: Changing commands that mount, unmount or make ZFS (un)mount something: they must run in
#: the host's mount namespace, so the backend's held session (a private namespace, see
#: beadm.esp.host) is released before each one.
_HOST_NS: tuple[tuple[str, ...], ...] = (
    ("mount",), ("umount",), ("zfs", "destroy"), ("zfs", "rename"), ("zfs", "create"),
    ("zfs", "promote"), ("zfs", "mount"), ("zfs", "unmount"), ("zfs", "umount"),
    ("zpool", "export"), ("systemctl",), ("proxmox-boot-tool",),
)


def _needs_host_ns(argv: Sequence[str]) -> bool:
    if any(tuple(argv[: len(p)]) == p for p in _HOST_NS):
        return True
    # a mountpoint change remounts; canmount=off unmounts
    return tuple(argv[:2]) == ("zfs", "set") and len(argv) > 2 and (
        argv[2].startswith("mountpoint=") or argv[2] == "canmount=off")


class _HostNsRunner:
    """The injected runner, releasing the backend's held session before every changing
    command that must run in the host's mount namespace (:data:`_HOST_NS`)."""

    def __init__(self, inner: Runner, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release = release

    @property
    def dry_run(self) -> bool:
        return self._inner.dry_run

    def run(self, argv: Sequence[str], *, readonly: bool = False,
            check: bool = True, on_line: LineSink | None = None) -> Result:
        if not readonly and _needs_host_ns(argv):
            self._release()
        return self._inner.run(argv, readonly=readonly, check=check, on_line=on_line)


class BeContext:
    """What the verbs share: dependencies injected, nothing printed, nothing exited."""

    def __init__(
        self,
        runner: Runner,
        backend: BootBackend,
        *,
        root: str | None = None,
        mountinfo: Path = mnt.MOUNTINFO,
        lock: Lock | None = None,
        clock: Callable[[], dt.datetime] | None = None,  # default: datetime.now
        running_root: Path = Path("/"),
        out: TextIO | None = None,
        chroot: Callable[[Runner, list[tuple[str, str]]], aptchroot.Chroot] | None = None,
    ) -> None:
        self.backend = backend
        self._raw_runner = runner
        self.runner: Runner = _HostNsRunner(runner, self._release)
        self._chroot = chroot  # upgrade's chroot (tests: fake namespace, temp dirs)
        self._running_root = running_root  # where the running BE's files are (tests: a dir)
        self._out = out  # a dry run's "would ..." lines (default: standard output)
        self.zfs = Zfs(self.runner)
        self._root_override = root
        self._mountinfo = mountinfo
        self._lock = lock if lock is not None else Lock()
        self._clock = clock if clock is not None else _now
        self._root: str | None = None
        self._root_checked = False
        self._altroot_value: str | None = None
        # the warnings of the command running now (its backend hooks', its clean-ups'),
        # handed to the caller in the command's result (beadm.be) and then forgotten
        self._warned: list[str] = []

    def _warn(self, found: Warnings) -> None:
        """Keep a hook's warnings for the command's result (each once)."""
        self._warned.extend(w for w in found if w not in self._warned)

    def _take_warnings(self) -> Warnings:
        """The command's warnings, now that it ended; the next command starts without."""
        taken, self._warned = tuple(self._warned), []
        return taken

    # -- where BEs live ------------------------------------------------------------------

    def mounts(self) -> list[mnt.Mount]:
        return mnt.read_mounts(self._mountinfo)

    # -- one backend session per command (issue 15) ----------------------------------------

    def _hold(self) -> AbstractContextManager[None]:
        """The backend keeps one session (its private namespace, the ESPs and the target
        BE mounted once) for the whole command, where it can."""
        return self.backend.hold()

    def _release(self) -> None:
        self.backend.release()

    def _view(self, ref: BeRef) -> Callable[[bool], Path | None]:
        """BE ``ref``'s root dataset as the backend's held session has it mounted (mounting
        it there if needed; ``writable``), None when the backend holds none."""
        def get(writable: bool) -> Path | None:
            return self.backend.be_view(ref, writable=writable)

        return get

    def _altroot(self) -> str:
        """The pool's ``altroot`` (fixed while the pool is imported: asked once, with
        ``bootfs``; any :meth:`_bootfs` asked before has brought it)."""
        if self._altroot_value is None:
            self._read_pool()
        assert self._altroot_value is not None
        return self._altroot_value

    def _read_pool(self) -> str:
        """``bootfs`` and ``altroot`` with one ``zpool get`` (issue 15); keeps altroot."""
        got = self.zfs.pool_props(self.pool, ("bootfs", "altroot"))
        self._altroot_value = got["altroot"]
        return got["bootfs"]

    @property
    def root(self) -> str:
        """The BE root dataset (e.g. ``rpool/ROOT``)."""
        if self._root is None:
            if self._root_override is not None:
                root = self._root_override.rstrip("/")
                if not root or "@" in root or root.startswith("/"):
                    raise UsageError(f"--root must be a dataset name, got {self._root_override!r}")
                if not self.zfs.exists(root):
                    raise NotFoundError(f"BE root {root} does not exist")
            else:
                top = mnt.root_dataset(self.mounts())
                if top is None or "/" not in top:
                    # the real cause first where it is that (no OpenZFS tools: the runner
                    # says "zfs: command not found")
                    self.zfs.version()
                    raise UnsupportedError(
                        "/ is not a ZFS dataset below a BE root; use --root DATASET"
                    )
                root = top.rpartition("/")[0]
            self._root = root
        return self._root

    @property
    def pool(self) -> str:
        return self.root.partition("/")[0]

    def running_name(self) -> str | None:
        """The BE mounted at ``/`` right now, if it lives under the BE root."""
        top = mnt.root_dataset(self.mounts())
        if top is not None and top.rpartition("/")[0] == self.root:
            return top.rpartition("/")[2]
        return None

    def _tree(self, *, snapshots: bool = True) -> Tree:
        tree = Tree(self.root, self.zfs.list_tree(self.root, snapshots=snapshots))
        if self._root_override is not None and not self._root_checked:
            self._check_root(tree)
            self._root_checked = True
        return tree

    def _check_root(self, tree: Tree) -> None:
        """A root named with ``--root`` must be a BE root: not a pool, in the pool of the
        running BE (if ``/`` is ZFS), and every child a root file system (mountpoint
        ``/``). Else ``sync`` would take ``ROOT`` and ``data`` for BEs and remove every
        boot entry of the real ones."""
        root = tree.root
        if "/" not in root:
            raise UsageError(f"--root {root} is a pool, not a BE root (e.g. {root}/ROOT)")
        top = mnt.root_dataset(self.mounts())
        if top is not None and top.partition("/")[0] != self.pool:
            raise RefusedError(
                f"--root {root} is in another pool than the running BE ({top})"
            )
        children = [tree.fs[tree.be_dataset(n)] for n in tree.be_names()]
        if not children:
            raise NotFoundError(f"--root {root} has no BE (no child file system)")
        altroot = self._altroot().rstrip("/")
        roots = {"/", altroot} if altroot else {"/"}
        for d in children:
            if d.mountpoint not in roots:
                raise RefusedError(
                    f"--root {root} is not a BE root: its child {d.name} has mountpoint "
                    f"{d.mountpoint or '-'}, not /"
                )

    def _bootfs(self) -> str:
        """The pool's ``bootfs`` now (asked every time; altroot comes with it)."""
        return self._read_pool()

    def _ref(self, be: BootEnv, running: str | None) -> BeRef:
        return BeRef(be.name, be.dataset, be.description, be.name == running)

    def _need(self, tree: Tree, name: str) -> BootEnv:
        if not tree.has_be(name):
            raise NotFoundError(f"BE {name} does not exist under {tree.root}")
        return tree.be(name)

    @contextmanager
    def _changing(self, *, boot: bool = False) -> Iterator[Tree]:
        """Hold the lock and the backend's session; yield the tree with what a killed
        command left finished or removed (:meth:`_recover`). ``boot``: the command changes
        what boots, so the backend may refuse it first (``preflight``)."""
        with self._lock, self._hold():
            if boot:
                self._preflight()
            yield self._recover(self._tree())

    def _recover(self, tree: Tree) -> Tree:
        """Finish or remove what a killed command left; the tree as it is then. The
        manager does it (beadm.be: with beadm.recovery, a module above this one, which
        runs the destroy and unmount verbs over this context)."""
        raise NotImplementedError

    def _preflight(self) -> None:
        self.backend.preflight()
