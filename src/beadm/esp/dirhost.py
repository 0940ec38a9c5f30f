"""The host over plain directories, for tests and benchmarks: the same interface as
:class:`beadm.esp.host.SystemHost` (ESP list, sessions, holds, EFI variables), with the
ESPs and BE roots as directories and nothing mounted."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from beadm.backend import BeRef
from beadm.errors import BootError
from beadm.esp.efivars import EfiVars
from beadm.esp.host import Esp, Holding, Session, read_uuids
from beadm.esp.store import EspStore


class DirSession:
    def __init__(self, host: DirHost) -> None:
        self._host = host
        self._esps: list[Esp] | None = None

    def esps(self) -> list[Esp]:
        if self._esps is None:
            self._esps = []
            for uuid in read_uuids(self._host.etc_kernel):
                path = self._host.esp_dirs.get(uuid)
                if path is None or not path.is_dir():
                    self._esps.append(Esp(uuid, None, f"ESP {uuid} is missing", missing=True))
                    continue
                self._host.esp_mounts += 1
                self._esps.append(Esp(uuid, EspStore(path, uuid, dry_run=self._host.dry_run,
                                                     out=self._host.out, step=self._host.step)))
        return self._esps

    def be_root(self, be: BeRef, *, writable: bool) -> Path:
        if be.dataset not in self._host.be_dirs:
            raise BootError(f"cannot mount {be.dataset}")
        if not be.running:
            self._host.be_mounts += 1
        return self._host.be_dirs[be.dataset]

    def close(self) -> None:
        pass  # nothing mounted


class DirHost(Holding):
    """ESPs and BE trees as directories: ``esp_dirs`` uuid -> dir, ``be_dirs`` dataset -> dir."""

    def __init__(self, etc_kernel: Path, esp_dirs: dict[str, Path], be_dirs: dict[str, Path],
                 efivars: Path, *, dry_run: bool = False, out: TextIO | None = None,
                 kernel: str = "0-none", cmdline: str | None = None) -> None:
        self.etc_kernel = etc_kernel
        self.esp_dirs = esp_dirs
        self.be_dirs = be_dirs
        self.dry_run = dry_run
        self.out = out if out is not None else sys.stdout
        self.efivars = EfiVars(efivars, dry_run=dry_run, out=self.out)
        self.esp_mounts = 0
        self.be_mounts = 0
        self.step: Callable[[str], None] | None = None
        self._kernel = kernel
        self._cmdline = cmdline

    def _open(self) -> Session:
        return DirSession(self)

    def proc_cmdline(self) -> str | None:
        return self._cmdline

    def running_kernel(self) -> str:
        return self._kernel

    def esp_present(self, uuid: str) -> bool:
        path = self.esp_dirs.get(uuid)
        return path is not None and path.is_dir()
