"""Copying a directory of live state and checking the copy (used by :mod:`beadm.statemove`).

SQLite databases (pmxcfs's ``config.db``, in WAL mode while pve-cluster runs) are copied
with SQLite's backup API, which folds the WAL in; everything else is copied by the
caller (``cp -a``). :func:`verify_copy` compares names, types, sizes and modification times
with a :func:`snapshot` taken before the copy, rejects a file that changed meanwhile (size,
mtime or ctime), and compares the databases' content and integrity. :func:`holders` finds
what has a file under a path open (a running guest's disk, a container's root);
:func:`empty_under` removes the old copy without following a link or leaving its file
system.
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from collections.abc import Callable, Container, Sequence
from contextlib import closing, suppress
from pathlib import Path

from beadm.errors import RefusedError
from beadm.record import record

SQLITE_MAGIC = b"SQLite format 3\x00"
SHOWN = 3


def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def sqlite_files(top: Path) -> list[Path]:
    """SQLite databases directly under ``top`` (where pmxcfs keeps ``config.db``)."""
    if not top.is_dir():
        return []
    return sorted(p for p in top.iterdir() if p.is_file() and not p.is_symlink()
                  and is_sqlite(p))


SQLITE_SIDE = ("-wal", "-shm", "-journal")


def sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of the database ``src`` (its WAL included) as the one file ``dst``."""
    for suffix in ("", *SQLITE_SIDE):
        with suppress(FileNotFoundError):
            Path(str(dst) + suffix).unlink()
    with closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as s, \
            closing(sqlite3.connect(dst)) as d:
        s.backup(d)
    st = src.stat()
    os.chown(dst, st.st_uid, st.st_gid)
    dst.chmod(st.st_mode & 0o7777)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dump(db: Path) -> list[str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        check = c.execute("PRAGMA integrity_check").fetchone()
        if check is None or check[0] != "ok":
            raise RefusedError(f"{db}: SQLite integrity check failed: {check}")
        return list(c.iterdump())


#: One entry of a :func:`snapshot`: (type, size, mtime_ns, ctime_ns, link target).
Entry = tuple[str, int, int, int, str]


def snapshot(top: Path, skip: Container[str]) -> dict[str, Entry]:
    """relative path -> :data:`Entry` for everything under ``top`` (links not followed)
    but the names in ``skip``. Directories count by their names only: reading a SQLite
    database may create its ``-shm`` file next to it."""
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        base = Path(dirpath)
        for name in dirnames + filenames:
            p = base / name
            rel = str(p.relative_to(top))
            if rel in skip:
                continue
            try:
                st = p.lstat()
            except FileNotFoundError:  # gone meanwhile: the second snapshot shows it
                continue
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, 0, st.st_ctime_ns, str(p.readlink()))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0, 0, 0, "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", st.st_size, st.st_mtime_ns, st.st_ctime_ns, "")
            else:
                out[rel] = ("other", 0, 0, st.st_ctime_ns, "")
    return out


def _copied(e: Entry) -> tuple[str, int, int, str]:
    """What a copy (``cp -a``) keeps of an entry: its ctime is the copy's own."""
    return e[0], e[1], e[2], e[4]


def _names(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def verify_copy(src: Path, dst: Path, dbs: Sequence[str],
                before: dict[str, Entry] | None = None) -> None:
    """Raise unless ``src`` is as it was in ``before`` (its :func:`snapshot` taken before
    the copy: no entry added, removed or changed in size, mtime or ctime) and ``dst`` has
    every entry of it (same type, size, mtime and link target; the same SQLite content for
    the databases ``dbs``, names relative to ``src``)."""
    skip = {d + s for d in dbs for s in SQLITE_SIDE} | set(dbs)
    now = snapshot(src, skip)
    if before is None:
        before = now
    changed = [k for k in before.keys() | now.keys() if before.get(k) != now.get(k)]
    if changed:
        raise RefusedError(f"{src} changed during the copy ({_names(changed)}): something "
                           "writes it; stop it and run again (the original is left in place)")
    copy = snapshot(dst, skip)
    missing = [k for k in before if k not in copy or _copied(copy[k]) != _copied(before[k])]
    extra = [k for k in copy if k not in before]
    if missing or extra:
        raise RefusedError(f"copy of {src} differs from the original: "
                           f"{_names(missing + extra)}")
    for db in dbs:
        if _dump(src / db) != _dump(dst / db):
            raise RefusedError(f"copy of {src / db} differs from the original")


def allocated(top: Path) -> int:
    """Bytes the files under ``top`` occupy (their blocks: what a copy will need, roughly)."""
    total = 0
    for dirpath, _, filenames in os.walk(top):
        for name in filenames:
            with suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_blocks * 512
    return total


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def empty_under(top: Path, path: str) -> None:
    """Remove everything inside ``top``/``path`` (not the directory itself). ``top`` is a
    directory of beadm's own (a bind mount of the BE root); each component of ``path`` is
    opened without following links (one is refused), nothing inside is followed, and a
    directory on another file system (a mount) is refused, not entered. A missing path is
    nothing to do."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    done = ""
    try:
        for part in [c for c in path.split("/") if c]:
            done += "/" + part
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if stat.S_ISLNK(st.st_mode):
                raise RefusedError(f"{done} is a symbolic link (in {top}): not removing "
                                   "through it")
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
        _empty_fd(fd, os.fstat(fd).st_dev, path)
    finally:
        os.close(fd)


def _empty_fd(fd: int, dev: int, where: str) -> None:
    for name in sorted(os.listdir(fd)):
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=fd)
            continue
        if st.st_dev != dev:
            raise RefusedError(f"{where}/{name} is another file system (a mount): not removed")
        sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
        try:
            _empty_fd(sub, dev, f"{where}/{name}")
        finally:
            os.close(sub)
        os.rmdir(name, dir_fd=fd)


# -- what has a file open under a path -------------------------------------------------------


@record
class Holder:
    """Something that has a file under a path to move in use."""

    who: str  # "pid 4242 (kvm)", "loop0", "swap"
    how: str  # "open", "mapped", "cwd", "root", "mount", "backing file", "swap file"
    path: str  # the file (as the holder names it)

    def __str__(self) -> str:
        return f"{self.who} ({self.how} {self.path})"


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m[1], 8)), field)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return ""


def _link(path: Path) -> str:
    try:
        return str(path.readlink()).removesuffix(" (deleted)")
    except OSError:
        return ""


def _proc_files(d: Path) -> list[tuple[str, str]]:
    """(how, path) of what the process ``d`` (a /proc/PID) uses by name."""
    out = [("cwd", _link(d / "cwd")), ("root", _link(d / "root"))]
    with suppress(OSError):
        out += [("open", _link(fd)) for fd in (d / "fd").iterdir()]
    for line in _read(d / "maps").splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("/"):
            out.append(("mapped", fields[5].removesuffix(" (deleted)")))
    return out


def holders(
    root_dir: str,
    paths: Sequence[str],
    dataset: str,
    *,
    proc: Path = Path("/proc"),
    sys_block: Path = Path("/sys/block"),
    skip: Callable[[int], bool] = lambda pid: False,
) -> list[Holder]:
    """What uses a file under ``paths`` (as in the BE ``dataset`` mounted at ``root_dir``):
    every process (but those ``skip`` says) with one open, mapped, as its working directory
    or root, or mounted in its mount namespace (a container's root file system, a bind
    mount: a mount of ``dataset`` whose root is under a path); a loop device backed by one;
    a swap file."""
    live = [root_dir.rstrip("/") + p if root_dir != "/" else p for p in paths]

    def under(p: str, tops: Sequence[str]) -> bool:
        return any(p == t or p.startswith(t.rstrip("/") + "/") for t in tops)

    found: list[Holder] = []
    namespaces: set[str] = set()
    try:
        pids = sorted(int(e.name) for e in proc.iterdir() if e.name.isdigit())
    except OSError:
        pids = []
    for pid in pids:
        if skip(pid):
            continue
        d = proc / str(pid)
        who = f"pid {pid} ({_read(d / 'comm').strip() or '?'})"
        for how, p in _proc_files(d):
            if p and under(p, live):
                found.append(Holder(who, how, p))
        ns = _link(d / "ns/mnt")
        if ns and ns not in namespaces:
            namespaces.add(ns)
            for line in _read(d / "mountinfo").splitlines():
                left, sep, right = line.partition(" - ")
                lf, rf = left.split(" "), right.split(" ")
                if sep and len(lf) > 4 and len(rf) > 1 and rf[0] == "zfs" \
                        and _unescape(rf[1]) == dataset and under(_unescape(lf[3]), paths):
                    found.append(Holder(who, "mount", _unescape(lf[3])))
    with suppress(OSError):
        for dev in sorted(sys_block.glob("loop*")):
            p = _read(dev / "loop/backing_file").strip().removesuffix(" (deleted)")
            if p and under(p, live):
                found.append(Holder(dev.name, "backing file", p))
    for line in _read(proc / "swaps").splitlines()[1:]:
        fields = line.split()
        if fields and under(_unescape(fields[0]), live):
            found.append(Holder("swap", "swap file", _unescape(fields[0])))
    return found
