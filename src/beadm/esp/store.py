"""One ESP seen as a plain directory: the shared kernel store, entries and loader.conf.

Mounting is not this module's business (see :mod:`.host`); everything here works on
any directory, which is how the unit tests drive it.

Crash order, per ESP: every new file is written under a temporary name, fsynced and
renamed into place (then the directory is fsynced); entries only after the files they
name; ``loader.conf``'s ``default`` only after the entries; garbage collection last.
Garbage collection derives references by scanning every entry file on the ESP (no
stored counters): a store file no entry names is removed, as are leftover temporaries.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from beadm import confined
from beadm.errors import BootError
from beadm.esp import entries as ent
from beadm.esp import loaderconf

ENTRIES_DIR = "loader/entries"
LOADER_CONF = "loader/loader.conf"
_TMP = ".beadm-tmp-"
_STORE_NAME = re.compile(r"^[0-9a-f]{16}-(vmlinuz|initrd\.img)-.+$")
_StatKey = tuple[int, int, int, int, int]
_digest_cache: dict[_StatKey, str] = {}
_name_cache: dict[tuple[_StatKey, str], str] = {}
_CHUNK = 1 << 20


#: Long steps (a kernel or initrd copied to an ESP): shown on a terminal (beadm.cli).
_progress = logging.getLogger("beadm.progress")

def _stat_key(path: Path) -> _StatKey:
    """Of a source file (a kernel or initrd of a BE, resolved inside it by
    :func:`beadm.esp.kernels.find`): a link now is refused, not followed."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise confined.LinkRefused(str(path), "not followed")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: Path) -> str:
    """sha256 of a file, hex; cached for one process per (device, inode, size, mtime,
    ctime).

    Why no more (issue 15): a cache that outlives the process would need a key that
    changes with the content, and stat has none that is certain across BEs: a clone has
    the same inode numbers, sizes and times as its origin (identical content, until it
    changes), but ``zfs receive`` and ``zfs rollback`` bring back old inodes with their
    old times, dpkg and ``cp -p``/``touch -r`` set mtimes, and each mount of a dataset
    gets a device number that the next mount of another one may reuse. Within one
    process the device number may be reused too (a session mounts BE after BE): the
    ctime, which no write, chmod or rename can leave unchanged and no program can set,
    is part of the key for that reason."""
    key = _stat_key(path)
    if key not in _digest_cache:
        import hashlib  # here: it loads OpenSSL, and list hashes nothing (issue 15)

        h = hashlib.sha256()
        with os.fdopen(confined.open_regular(path), "rb") as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
        _digest_cache[key] = h.hexdigest()
    return _digest_cache[key]


def store_name(digest: str, basename: str) -> str:
    return f"{digest[:16]}-{basename}"


def _same_bytes(a: Path, b: Path) -> bool:
    with os.fdopen(confined.open_regular(a), "rb") as fa, b.open("rb") as fb:
        while True:
            x = fa.read(_CHUNK)
            if x != fb.read(_CHUNK):
                return False
            if not x:
                return True


def content_name(src: Path, basename: str, stores: Iterable[EspStore] = ()) -> str:
    """The store name of ``src`` (``<sha256[:16]>-<basename>``).

    Issue 15: sha256 runs at ~9 MB/s in a VM without SHA instructions, and a kernel +
    initrd is 20-80 MB. When one of ``stores`` already holds a file of that basename and
    size whose bytes equal ``src``'s, its name is the answer: it was named by the digest of
    exactly those bytes when beadm wrote it, so no hash is needed (a byte compare reads
    both files, which is several times faster than hashing one). Otherwise, or when no
    store file matches byte for byte, the file is hashed. Cached per process like
    :func:`file_digest` (stat key incl. ctime)."""
    key = (_stat_key(src), basename)
    found = _name_cache.get(key)
    if found is not None:
        return found
    size = key[0][2]
    for st in stores:
        for cand in st.store_files():
            if not cand.endswith("-" + basename) or len(cand) != 17 + len(basename):
                continue
            path = st.root / ent.STORE_DIR / cand
            try:
                if path.stat().st_size == size and _same_bytes(src, path):
                    _name_cache[key] = cand
                    return cand
            except OSError:
                continue
    name = store_name(file_digest(src), basename)
    _name_cache[key] = name
    return name


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class EspStore:
    """The beadm-relevant content of one mounted ESP at ``root``, labelled ``uuid``."""

    def __init__(self, root: Path, uuid: str, *, dry_run: bool = False,
                 out: TextIO | None = None,
                 step: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.uuid = uuid
        self.dry_run = dry_run
        self._out = out if out is not None else sys.stdout
        self._step = step  # called before every change (tests inject crashes here)

    # -- reading -------------------------------------------------------------------
    def entry_files(self) -> dict[str, ent.Entry]:
        """Every ``*.conf`` entry (beadm's and foreign), by file name."""
        d = self.root / ENTRIES_DIR
        found: dict[str, ent.Entry] = {}
        if not d.is_dir():
            return found
        for p in sorted(d.iterdir()):
            if p.name.endswith(".conf") and p.is_file():
                found[p.name] = ent.parse(p.read_text(encoding="utf-8", errors="replace"))
        return found

    def beadm_entries(self) -> dict[str, ent.Entry]:
        return {n: e for n, e in self.entry_files().items() if n.startswith(ent.PREFIX)}

    def loader_conf(self) -> str | None:
        try:
            return (self.root / LOADER_CONF).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None

    def loader_default(self) -> str | None:
        text = self.loader_conf()
        return loaderconf.get_default(text) if text is not None else None

    def has(self, rel: str) -> bool:
        return (self.root / rel.lstrip("/")).is_file()

    def store_files(self) -> list[str]:
        d = self.root / ent.STORE_DIR
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if _STORE_NAME.match(p.name))

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    # -- changing ------------------------------------------------------------------
    def _fail(self, what: str, exc: OSError) -> BootError:
        if exc.errno == errno.ENOSPC:
            return BootError(f"ESP {self.uuid} is full: cannot write {what}")
        return BootError(f"ESP {self.uuid}: cannot write {what}: {exc.strerror or exc}")

    def _place(self, rel: str, write: Callable[[int], None]) -> None:
        """Write ``rel`` via a temporary file + fsync + rename + directory fsync; a link
        on the way is refused, never followed (:func:`beadm.confined.write_file`)."""
        step = self._step

        def before_rename() -> None:
            if step:
                step(f"rename {rel}")

        try:
            confined.write_file(self.root, rel, write, mode=0o644, chmod=False,
                                tmp_prefix=_TMP, tmp_suffix="", before_rename=before_rename)
        except OSError as exc:
            raise self._fail(rel, exc) from exc

    def _write_text(self, rel: str, text: str) -> None:
        data = text.encode("utf-8")

        def write(fd: int) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        self._place(rel, write)

    def bytes_to_add(self, files: list[tuple[Path, str]], cluster: int) -> int:
        """What storing ``files`` (source, basename) would take on this ESP, rounded up to
        ``cluster``: only the ones not stored yet (same test as :meth:`put_file`)."""
        need = 0
        for src, basename in files:
            dest = self.root / ent.STORE_DIR / content_name(src, basename, (self,))
            size = _stat_key(src)[2]
            if not (dest.is_file() and dest.stat().st_size == size):
                need += -(-size // cluster) * cluster
        return need

    def proxmox_pair_bytes(self) -> int:
        """The largest kernel + initrd Proxmox keeps here (``EFI/proxmox/<kver>/``): about
        what its next kernel update will need on this ESP."""
        top = self.root / "EFI" / "proxmox"
        best = 0
        if top.is_dir():
            for d in top.iterdir():
                if d.is_dir():
                    best = max(best, sum(f.stat().st_size for f in d.iterdir() if f.is_file()))
        return best

    def put_file(self, src: Path, basename: str) -> str:
        """Store ``src`` by content; return the ESP path an entry names (``/beadm/...``)."""
        name = content_name(src, basename, (self,))
        rel = f"{ent.STORE_DIR}/{name}"
        dest = self.root / rel
        if dest.is_file() and dest.stat().st_size == _stat_key(src)[2]:
            return "/" + rel
        if self.dry_run:
            print(f"would copy {src} to ESP {self.uuid}:/{rel}", file=self._out)
            return "/" + rel

        def write(fd: int) -> None:
            with os.fdopen(confined.open_regular(src), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view) :]

        _progress.info("copying %s (%.1f MiB) to ESP %s", basename,
                       _stat_key(src)[2] / (1 << 20), self.uuid)
        self._place(rel, write)
        return "/" + rel

    def write_entry(self, fname: str, entry: ent.Entry) -> None:
        rel = f"{ENTRIES_DIR}/{fname}"
        text = entry.render()
        p = self.root / rel
        if p.is_file() and p.read_text(encoding="utf-8", errors="replace") == text:
            return
        if self.dry_run:
            print(f"would write ESP {self.uuid}:/{rel}", file=self._out)
            return
        self._write_text(rel, text)

    def remove_entry(self, fname: str) -> None:
        p = self.root / ENTRIES_DIR / fname
        if not p.exists():
            return
        if self.dry_run:
            print(f"would remove ESP {self.uuid}:/{ENTRIES_DIR}/{fname}", file=self._out)
            return
        if self._step:
            self._step(f"unlink {ENTRIES_DIR}/{fname}")
        try:
            p.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fail(f"{ENTRIES_DIR}/{fname}", exc) from exc
        _fsync_dir(p.parent)

    def remove_tree(self, rel: str) -> None:
        """Remove a folder of plain files (the old layout's ``env/<be>``), files first."""
        d = self.root / rel
        if not d.is_dir():
            return
        if self.dry_run:
            print(f"would remove ESP {self.uuid}:/{rel}/", file=self._out)
            return
        for p in sorted(d.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            if self._step:
                self._step(f"unlink {p.relative_to(self.root).as_posix()}")
            try:
                p.rmdir() if p.is_dir() else p.unlink()
            except OSError as exc:
                raise self._fail(f"{rel} (removing)", exc) from exc
        d.rmdir()

    def set_loader_default(self, pattern: str) -> None:
        text = self.loader_conf()
        new = loaderconf.set_default(text if text is not None else loaderconf.DEFAULT_TEXT,
                                     pattern)
        if new == text:
            return
        if self.dry_run:
            print(f"would set 'default {pattern}' in ESP {self.uuid}:/{LOADER_CONF}",
                  file=self._out)
            return
        self._write_text(LOADER_CONF, new)

    def read_text(self, rel: str) -> str | None:
        """A text file of the ESP (None: there is none)."""
        try:
            return (self.root / rel).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write_text(self, rel: str, text: str) -> None:
        """Write a whole file (temporary + fsync + rename), unless it already says ``text``."""
        if self.read_text(rel) == text:
            return
        if self.dry_run:
            print(f"would write ESP {self.uuid}:/{rel}", file=self._out)
            return
        self._write_text(rel, text)

    def gc(self, referenced: set[str] | None = None) -> list[str]:
        """Remove store files no entry on this ESP names, and leftover temporaries.
        ``referenced``: the store paths (``beadm/<name>``) in use, when another boot loader's
        menu (GRUB's) names them instead of systemd-boot entries."""
        if referenced is None:
            referenced = set()
            for e in self.entry_files().values():
                referenced.update(e.store_paths())
        removed: list[str] = []
        for d in (self.root / ent.STORE_DIR, self.root / ENTRIES_DIR, self.root / "loader",
                  self.root / "grub"):
            if not d.is_dir():
                continue
            for p in sorted(d.iterdir()):
                rel = p.relative_to(self.root).as_posix()
                stale = p.name.startswith(_TMP) or (
                    d.name == ent.STORE_DIR and _STORE_NAME.match(p.name)
                    and rel not in referenced)
                if not stale:
                    continue
                removed.append(rel)
                if self.dry_run:
                    print(f"would remove ESP {self.uuid}:/{rel}", file=self._out)
                    continue
                if self._step:
                    self._step(f"unlink {rel}")
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
        return removed
