"""Copying a directory of live state and checking the copy (used by :mod:`beadm.pvestate`).

SQLite databases (pmxcfs's ``config.db``, in WAL mode while pve-cluster runs) are copied
with SQLite's backup API, which folds the WAL in; everything else is copied by the
caller (``cp -a``). :func:`verify_copy` compares names, types and sizes, and the
databases' content and integrity.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Container, Sequence
from contextlib import closing, suppress
from pathlib import Path

from beadm.errors import RefusedError

SQLITE_MAGIC = b"SQLite format 3\x00"



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


_SQLITE_SIDE = ("-wal", "-shm", "-journal")


def sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of the database ``src`` (its WAL included) as the one file ``dst``."""
    for suffix in ("", *_SQLITE_SIDE):
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


def _entries(top: Path, skip: Container[str]) -> dict[str, tuple[str, int | str]]:
    """relative path -> (type, size or link target), without following symlinks."""
    out: dict[str, tuple[str, int | str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        base = Path(dirpath)
        for name in dirnames + filenames:
            p = base / name
            rel = str(p.relative_to(top))
            if rel in skip:
                continue
            if p.is_symlink():
                out[rel] = ("link", str(p.readlink()))
            elif p.is_dir():
                out[rel] = ("dir", 0)
            elif p.is_file():
                out[rel] = ("file", p.stat().st_size)
            else:
                out[rel] = ("other", 0)
    return out


def verify_copy(src: Path, dst: Path, dbs: Sequence[str]) -> None:
    """Raise unless ``dst`` has every entry of ``src`` (same type and size; the same SQLite
    content for the databases ``dbs``, names relative to ``src``)."""
    skip = {d + s for d in dbs for s in _SQLITE_SIDE}
    a = _entries(src, skip | set(dbs))
    b = _entries(dst, skip | set(dbs))
    missing = sorted(k for k in a if b.get(k) != a[k])
    extra = sorted(k for k in b if k not in a)
    if missing or extra:
        raise RefusedError(f"copy of {src} differs from the original: "
                           f"{', '.join((missing + extra)[:5])}")
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


def empty_dir(top: Path) -> None:
    """Remove everything inside ``top`` (not ``top`` itself), never following symlinks."""
    for p in sorted(top.iterdir()):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


