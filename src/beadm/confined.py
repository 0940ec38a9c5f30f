"""Every file access inside a BE's tree, confined to that tree: a BE is untrusted data.

A BE that is not running is mounted under ``/run/beadm-*/be-N``; a link in it resolved by
the running system points at the running system's files (``etc/kernel -> /etc/kernel``
would make beadm rewrite the host's command line, ``boot/vmlinuz-X -> /etc/shadow`` copy
the host's secrets onto every ESP). So beadm reaches a file of a BE only through this
module, which walks the path one name at a time from a descriptor of the BE's root
(``openat`` with ``O_NOFOLLOW``), never by handing a joined path to the kernel:

- **Reads** (:func:`read_bytes`, :func:`read_text`, :func:`stat`, :func:`listdir`,
  :func:`regular`): a symbolic link is followed *as the BE sees it*, as if its root were
  ``/`` (``chroot``): an absolute target starts again at the BE's root, ``..`` stops at
  it. Nothing outside the tree can be reached. Files must be regular files (a device or
  fifo is refused: ``EINVAL``). In the running BE (root ``/``) this is exactly the
  system's own resolution.
- **Writes** (:func:`write_file`, :func:`symlink`): no link is followed. In a BE that is
  not ``/``, a link anywhere on the path (a directory or the file itself) is refused with
  :class:`LinkRefused` (one line, naming the path as the BE sees it), never followed. In
  ``/`` (the running system: the host's paths are the BE's, there is nothing to escape
  to) the directories are resolved as reads are; the file itself must not be a link
  there either. A write is a temporary file in the same directory (by descriptor),
  fsynced, renamed over the old file (by descriptor), the directory fsynced.

Each step opens the next name relative to the descriptor of the directory before it, with
``O_NOFOLLOW``: a link swapped in between a look and the open fails, it is never
followed (no check-then-use window). :func:`open_regular` opens a file whose path was
resolved by :func:`regular` (a kernel or initrd the store copies to the ESPs) without
following a link in its last name, and only if it is still a regular file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as st
from collections.abc import Callable, Iterator
from pathlib import Path

#: Links followed in one resolution before it is a loop (the kernel's own limit).
MAX_LINKS = 40
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
TMP_SUFFIX = ".beadm-tmp"


class LinkRefused(OSError):
    """A symbolic link where beadm would write, or one a read may not follow."""

    def __init__(self, shown: str, why: str = "beadm does not write through it") -> None:
        super().__init__(errno.ELOOP, f"{shown} is a symbolic link: {why}")
        self.shown = shown

    def __str__(self) -> str:
        return str(self.strerror)


def _names(rel: str) -> list[str]:
    return [p for p in rel.split("/") if p and p != "."]


def _shown(done: list[str], name: str = "") -> str:
    return "/" + "/".join([*done, name] if name else done)


class _Walk:
    """Descriptors of the directories from the root down to the current one."""

    def __init__(self, root: Path, why: str = "beadm does not write through it") -> None:
        self.fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        self.names: list[str] = []
        self.why = why

    @property
    def fd(self) -> int:
        return self.fds[-1]

    def up(self) -> None:
        if len(self.fds) > 1:
            os.close(self.fds.pop())
            self.names.pop()

    def to_root(self) -> None:
        while len(self.fds) > 1:
            self.up()

    def down(self, name: str) -> None:
        """Enter the directory ``name`` (never through a link)."""
        try:
            fd = os.open(name, _DIR, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(self.fd, name):
                raise LinkRefused(_shown(self.names, name), self.why) from None
            raise
        self.fds.append(fd)
        self.names.append(name)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _is_link(dfd: int, name: str) -> bool:
    try:
        return st.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _lstat(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _resolved(root: Path, rel: str, *, follow_last: bool = True) -> Iterator[tuple[_Walk, str]]:
    """The directory (a :class:`_Walk` at it) and the name ``rel`` comes to inside
    ``root``, every link followed as if ``root`` were ``/`` (the last name's only with
    ``follow_last``). The name is "" for the root itself. ELOOP for a loop."""
    w = _Walk(root)
    try:
        todo = _names(rel)
        links = 0
        name = ""
        while todo:
            part = todo.pop(0)
            if part == "..":
                w.up()
                continue
            if not todo and not follow_last:
                name = part
                break
            info = _lstat(w.fd, part)
            if info is not None and st.S_ISLNK(info.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, "a symbolic link loop", _shown(w.names, part))
                target = os.readlink(part, dir_fd=w.fd)
                if target.startswith("/"):
                    w.to_root()
                todo = _names(target) + todo
                continue
            if not todo:
                name = part
                break
            if info is None:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT),
                                        _shown(w.names, part))
            w.down(part)
        yield w, name
    finally:
        w.close()


def resolve(root: Path, rel: str) -> Path | None:
    """``rel`` (as the BE at ``root`` sees it) as a path below ``root`` with no link left
    in it, every link followed inside the root; None for a loop or a missing directory."""
    try:
        with _resolved(root, rel) as (w, name):
            return root.joinpath(*w.names, *([name] if name else []))
    except OSError:
        return None


def _open_file(w: _Walk, name: str, shown: str) -> int:
    """Open the regular file ``name`` in the walk's directory for reading."""
    if not name:
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), shown)
    try:
        fd = os.open(name, _FILE, dir_fd=w.fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link swapped in after the walk looked
            raise LinkRefused(shown, "not followed") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if st.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), shown)
        if not st.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd(fd: int, limit: int | None) -> bytes:
    chunks = []
    size = 0
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes, not read")
    return b"".join(chunks)


def read_bytes(root: Path, rel: str, *, limit: int | None = None) -> bytes:
    """The regular file ``rel`` of the BE at ``root`` (see module doc)."""
    with _resolved(root, rel) as (w, name):
        fd = _open_file(w, name, "/" + rel.lstrip("/"))
        try:
            return _read_fd(fd, limit)
        finally:
            os.close(fd)


def read_text(root: Path, rel: str, *, errors: str = "strict") -> str:
    return read_bytes(root, rel).decode("utf-8", errors=errors)


def stat(root: Path, rel: str) -> os.stat_result:
    """``stat`` of ``rel`` in the BE at ``root``, links followed inside it."""
    with _resolved(root, rel) as (w, name):
        if not name:
            return os.fstat(w.fd)
        return os.stat(name, dir_fd=w.fd, follow_symlinks=False)


def is_file(root: Path, rel: str) -> bool:
    try:
        return st.S_ISREG(stat(root, rel).st_mode)
    except OSError:
        return False


def is_dir(root: Path, rel: str) -> bool:
    try:
        return st.S_ISDIR(stat(root, rel).st_mode)
    except OSError:
        return False


def listdir(root: Path, rel: str) -> list[str]:
    """Names in the directory ``rel`` of the BE at ``root`` (sorted)."""
    with _resolved(root, rel) as (w, name):
        if name:
            w.down(name)
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=w.fd)
        try:
            return sorted(os.listdir(fd))  # noqa: PTH208 (a descriptor, not a path)
        finally:
            os.close(fd)


def regular(root: Path, rel: str) -> Path | None:
    """``rel`` resolved inside the BE at ``root`` (:func:`resolve`) when it is a regular
    file there; None otherwise (missing, a directory, a device, a link out of nowhere)."""
    try:
        with _resolved(root, rel) as (w, name):
            if not name:
                return None
            info = os.stat(name, dir_fd=w.fd, follow_symlinks=False)
            if not st.S_ISREG(info.st_mode):
                return None
            return root.joinpath(*w.names, name)
    except OSError:
        return None


def open_regular(path: Path) -> int:
    """A read descriptor of ``path`` (from :func:`regular`): its last name is not followed
    if it is a link now, and it must still be a regular file."""
    try:
        fd = os.open(path, _FILE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LinkRefused(str(path), "not followed") from None
        raise
    if not st.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


# -- writing ----------------------------------------------------------------------------


@contextlib.contextmanager
def _parent(root: Path, rel: str, *, create: bool) -> Iterator[tuple[_Walk, str]]:
    """The directory that holds ``rel`` in the BE at ``root`` (made with ``create``) and
    ``rel``'s last name; a link on the way refused (followed inside ``/``, module doc)."""
    names = _names(rel)
    if not names or ".." in names:
        raise ValueError(f"not a path beadm writes: {rel!r}")
    if root == Path("/"):
        parent = "/".join(names[:-1])
        if create:
            Path("/", parent).mkdir(parents=True, exist_ok=True)
        with _resolved(root, parent + "/.") as (w, name):
            if name:
                w.down(name)
            yield w, names[-1]
        return
    w = _Walk(root)
    try:
        for part in names[:-1]:
            if create and _lstat(w.fd, part) is None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=w.fd)
            w.down(part)
        yield w, names[-1]
    finally:
        w.close()


def _refuse_link(w: _Walk, name: str) -> os.stat_result | None:
    info = _lstat(w.fd, name)
    if info is not None and st.S_ISLNK(info.st_mode):
        raise LinkRefused(_shown(w.names, name))
    return info


def write_file(root: Path, rel: str, data: bytes | Callable[[int], None], *,
               mode: int | None = None, chmod: bool = True, fsync: bool = True,
               tmp_prefix: str = ".", tmp_suffix: str = TMP_SUFFIX,
               before_rename: Callable[[], None] | None = None) -> None:
    """Replace ``rel`` in the tree at ``root`` by ``data`` (bytes, or a function that
    writes to the descriptor it is given); see module doc. ``mode``: the file's
    permissions (default: the old file's, else 0644), set with ``fchmod`` unless not
    ``chmod`` (FAT). The temporary file is ``<tmp_prefix><name><tmp_suffix>``."""
    with _parent(root, rel, create=True) as (w, name):
        old = _refuse_link(w, name)
        if mode is None:
            mode = st.S_IMODE(old.st_mode) if old is not None else 0o644
        tmp = f"{tmp_prefix}{name}{tmp_suffix}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=w.fd)  # a leftover (or a planted link): never opened
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=w.fd)
        try:
            try:
                if chmod:
                    os.fchmod(fd, mode)  # neither the umask's nor a leftover's
                if callable(data):
                    data(fd)
                else:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if before_rename is not None:
                before_rename()
            _refuse_link(w, name)
            os.replace(tmp, name, src_dir_fd=w.fd, dst_dir_fd=w.fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=w.fd)
            raise
        if fsync:
            with contextlib.suppress(OSError):  # not every file system syncs a directory
                os.fsync(w.fd)


def symlink(root: Path, rel: str, target: str) -> None:
    """Make ``rel`` in the BE at ``root`` a link to ``target`` (an old link at ``rel`` is
    replaced, never followed; a directory on the way that is a link is refused)."""
    with _parent(root, rel, create=True) as (w, name):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=w.fd)
        os.symlink(target, name, dir_fd=w.fd)


def readlink(root: Path, rel: str) -> str | None:
    """The target of the link ``rel`` in the BE at ``root`` (its directories resolved
    inside it); None when ``rel`` is not a link."""
    try:
        with _resolved(root, rel, follow_last=False) as (w, name):
            return os.readlink(name, dir_fd=w.fd) if _is_link(w.fd, name) else None
    except OSError:
        return None


def why(exc: OSError) -> str:
    """One line for a failed access in a BE (the path as the BE sees it when known)."""
    if isinstance(exc, LinkRefused):
        return str(exc)
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


# -- mount points (mount(8) follows links) ---------------------------------------------------


def _strict(root: Path, names: list[str], *, create: bool,
            why: str = "beadm does not write through it") -> _Walk:
    """A walk down ``names`` from ``root``, every name a real directory (made when missing
    with ``create``), a link refused."""
    w = _Walk(root, why)
    try:
        for part in names:
            if part == "..":
                raise ValueError(f"not a path in a BE: {'/'.join(names)!r}")
            if create and _lstat(w.fd, part) is None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=w.fd)
            w.down(part)
    except BaseException:
        w.close()
        raise
    return w


def mount_point(root: Path, rel: str, *, create: bool = False) -> Path:
    """``root``/``rel`` to mount a file system on: a directory reached without any link
    (made when missing with ``create``); :class:`LinkRefused` otherwise, as ``mount``
    would follow the link out of the tree."""
    w = _strict(root, _names(rel), create=create, why="beadm mounts nothing through it")
    try:
        return root.joinpath(*w.names)
    finally:
        w.close()


def plain_dir(root: Path, rel: str) -> Path | None:
    """``root``/``rel`` when it is a directory reached without any link; None otherwise
    (missing, not a directory, a link on the way)."""
    try:
        w = _strict(root, _names(rel), create=False)
    except (OSError, ValueError):
        return None
    try:
        return root.joinpath(*w.names)
    finally:
        w.close()


def unlink(root: Path, rel: str) -> None:
    """Remove the file ``rel`` of the tree at ``root`` (a link on the way refused; the file
    itself is removed, never followed)."""
    names = _names(rel)
    w = _strict(root, names[:-1], create=False)
    try:
        os.unlink(names[-1], dir_fd=w.fd)
    finally:
        w.close()
