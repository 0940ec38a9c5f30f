"""systemd-boot's EFI variables through efivarfs.

Decision: beadm reads and writes efivarfs directly instead of calling ``bootctl``.
``bootctl`` lives in a separate package on Proxmox 9 (``systemd-boot-tools``), needs a
systemd-boot that set ``LoaderInfo``, and adds nothing here; efivarfs is the kernel's
interface and works on a directory in unit tests. Rules followed:

* a variable file is read whole in one ``read`` (efivarfs files cannot be seeked);
* a write is one ``write`` of 4 attribute bytes (non-volatile, boot and run time
  access) + UTF-16LE text + NUL; the immutable flag is cleared first if set;
* a write the firmware refuses raises :class:`EfiRefused`: callers fall back to
  ``loader.conf`` and say so.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import sys
from pathlib import Path
from typing import TextIO

EFIVARS = Path("/sys/firmware/efi/efivars")
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
ONESHOT = "LoaderEntryOneShot"
DEFAULT = "LoaderEntryDefault"
SELECTED = "LoaderEntrySelected"
_ATTRS = 0x7  # EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x00000010


class EfiRefused(OSError):
    """The firmware (or the kernel) refused to write or delete an EFI variable."""


def encode(value: str) -> bytes:
    return struct.pack("<I", _ATTRS) + (value + "\0").encode("utf-16-le")


def decode(raw: bytes) -> str | None:
    if len(raw) < 4:
        return None
    text = raw[4:].decode("utf-16-le", errors="replace")
    return text.split("\0", 1)[0]


class EfiVars:
    """The loader variables under ``root`` (efivarfs, or a plain directory in tests)."""

    def __init__(self, root: Path = EFIVARS, *, dry_run: bool = False,
                 out: TextIO | None = None) -> None:
        self.root = root
        self.dry_run = dry_run
        self._out = out if out is not None else sys.stdout

    def available(self) -> bool:
        return self.root.is_dir()

    def _path(self, name: str) -> Path:
        return self.root / f"{name}-{LOADER_GUID}"

    def get(self, name: str) -> str | None:
        try:
            with self._path(name).open("rb", buffering=0) as f:
                raw = f.read()  # one read: efivarfs files cannot be seeked
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            return None
        value = decode(raw)
        return value or None

    def set(self, name: str, value: str) -> None:
        if not self.available():  # (a dry run fails here too, as the real run would)
            raise EfiRefused(errno.ENOENT, "no EFI variables (not booted in UEFI mode)")
        if self.dry_run:
            print(f"would set EFI variable {name}={value}", file=self._out)
            return
        path = self._path(name)
        _clear_immutable(path)
        data = encode(value)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(errno.EIO, "short write")
            finally:
                os.close(fd)
        except OSError as exc:
            raise EfiRefused(exc.errno or errno.EIO, f"{name}: {exc.strerror}") from exc
        if self.get(name) != value:
            raise EfiRefused(errno.EIO, f"{name}: the firmware did not keep the value")

    def delete(self, name: str) -> None:
        path = self._path(name)
        if not path.exists():
            return
        if self.dry_run:
            print(f"would delete EFI variable {name}", file=self._out)
            return
        _clear_immutable(path)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise EfiRefused(exc.errno or errno.EIO, f"{name}: {exc.strerror}") from exc


def _clear_immutable(path: Path) -> None:
    """efivarfs may mark variable files immutable; clear it (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        buf = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("i", 0))
        flags = struct.unpack("i", buf)[0]
        if flags & _FS_IMMUTABLE_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags & ~_FS_IMMUTABLE_FL))
    except OSError:
        pass
    finally:
        os.close(fd)
