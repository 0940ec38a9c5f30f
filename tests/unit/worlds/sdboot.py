"""A Proxmox-like machine made of directories, for the systemd-boot backend's unit tests.

Two ESPs (``AAAA-0001``, ``AAAA-0002``) as Proxmox leaves them (``EFI/proxmox/<kver>/``,
``loader/entries/proxmox-<kver>.conf``, ``loader.conf`` with ``default proxmox-*``), BE
trees with ``/boot`` and ``/etc/kernel/cmdline``, an efivars directory and a fake runner
that keeps ZFS user properties. :func:`pbt_refresh` and :func:`pbt_reinit` reproduce what
proxmox-boot-tool is documented to do to ``loader.conf`` (docs/proxmox-boot.md).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence
from pathlib import Path

from beadm.backend import BeRef
from beadm.errors import CommandError
from beadm.esp.dirhost import DirHost
from beadm.runner import Result
from beadm.sdboot.backend import SystemdBootBackend

UUIDS = ("AAAA-0001", "AAAA-0002")
K1 = "6.8.12-1-pve"
K2 = "6.8.12-2-pve"
POOL = "rpool"


class PropRunner:
    """Records argv; answers ``zfs get/set/inherit`` of user properties from a dict."""

    def __init__(self, *, dry_run: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.props: dict[tuple[str, str], str] = {}
        self.missing: set[str] = set()  # datasets `zfs list` says do not exist
        self._dry_run = dry_run

    @property
    def dry_run(self) -> bool:
        return self._dry_run

    def run(self, argv: Sequence[str], *, readonly: bool = False, check: bool = True,
            on_line: object = None) -> Result:
        a = tuple(argv)
        self.calls.append(a)
        out = ""
        if self._dry_run and not readonly:
            return Result(a, 0, "", "")
        if a[:2] == ("zfs", "list") and a[-1] in self.missing:
            if check:
                raise CommandError(list(a), 1, f"cannot open '{a[-1]}': dataset does not exist")
            return Result(a, 1, "", "dataset does not exist")
        if a[:2] == ("zfs", "get"):
            out = self.props.get((a[-1], a[-2]), "-") + "\n"
        elif a[:2] == ("zfs", "set"):
            k, _, v = a[2].partition("=")
            self.props[(a[3], k)] = v
        elif a[:2] == ("zfs", "inherit"):
            for name in a[3:]:
                self.props.pop((name, a[2]), None)
        elif a[0] == "false":
            if check:
                raise CommandError(list(a), 1, "failed")
            return Result(a, 1, "", "failed")
        return Result(a, 0, out, "")


class World:
    def __init__(self, tmp: Path, *, dry_run: bool = False) -> None:
        self.tmp = tmp
        self.etc = tmp / "etc-kernel"
        self.etc.mkdir(parents=True)
        (self.etc / "proxmox-boot-uuids").write_text("\n".join(UUIDS) + "\n")
        self.esps = {u: tmp / "esp" / u for u in UUIDS}
        self.efivars = tmp / "efivars"
        self.efivars.mkdir()
        self.bes: dict[str, Path] = {}
        self.runner = PropRunner(dry_run=dry_run)
        self.out = io.StringIO()
        self.host = DirHost(self.etc, dict(self.esps), self.bes, self.efivars,
                            dry_run=dry_run, out=self.out, kernel=K1,
                            cmdline=f"BOOT_IMAGE=/x initrd=\\y root=ZFS={POOL}/ROOT/pve-1 boot=zfs")
        self.backend = SystemdBootBackend(self.runner, host=self.host, out=self.out)
        for esp in self.esps.values():
            self.pbt_install(esp)
        self.add_be("pve-1", {K1: b"kernel-1", K2: b"kernel-2"})
        self.pbt_refresh_entries("pve-1")

    # -- BEs --------------------------------------------------------------------------
    def ref(self, name: str, *, running: bool | None = None, desc: str = "") -> BeRef:
        return BeRef(name, f"{POOL}/ROOT/{name}", desc,
                     running if running is not None else name == "pve-1")

    def refs(self) -> list[BeRef]:
        return [self.ref(n) for n in sorted(self.bes_by_name())]

    def bes_by_name(self) -> dict[str, Path]:
        return {ds.rsplit("/", 1)[1]: p for ds, p in self.bes.items()}

    def add_be(self, name: str, kernels: dict[str, bytes] | None = None,
               clone_of: str | None = None) -> Path:
        root = self.tmp / "be" / name
        if clone_of:
            shutil.copytree(self.bes[f"{POOL}/ROOT/{clone_of}"], root)
        else:
            (root / "boot").mkdir(parents=True)
            (root / "etc/kernel").mkdir(parents=True)
            (root / "etc/kernel/cmdline").write_text(
                f"root=ZFS={POOL}/ROOT/pve-1 boot=zfs quiet\n")
            # each Proxmox root has its own copy of the ESP list (issue 11.7)
            shutil.copy2(self.etc / "proxmox-boot-uuids", root / "etc/kernel")
        for kver, data in (kernels or {}).items():
            (root / "boot" / f"vmlinuz-{kver}").write_bytes(b"vmlinuz " + data)
            (root / "boot" / f"initrd.img-{kver}").write_bytes(b"initrd " + data * 10)
        self.bes[f"{POOL}/ROOT/{name}"] = root
        return root

    def rename_be(self, old: str, new: str) -> None:
        root = self.bes.pop(f"{POOL}/ROOT/{old}")
        self.bes[f"{POOL}/ROOT/{new}"] = root

    # -- proxmox-boot-tool, as documented ---------------------------------------------
    def pbt_install(self, esp: Path) -> None:
        (esp / "EFI/proxmox").mkdir(parents=True)
        (esp / "EFI/systemd").mkdir(parents=True)
        (esp / "loader/entries").mkdir(parents=True)
        (esp / "loader/loader.conf").write_text("timeout 3\ndefault proxmox-*\n")

    def pbt_refresh_entries(self, be: str) -> None:
        root = self.bes[f"{POOL}/ROOT/{be}"]
        line = (root / "etc/kernel/cmdline").read_text().splitlines()[0]
        for esp in self.esps.values():
            for vml in sorted((root / "boot").glob("vmlinuz-*")):
                kver = vml.name[len("vmlinuz-"):]
                d = esp / "EFI/proxmox" / kver
                d.mkdir(parents=True, exist_ok=True)
                shutil.copy(vml, d / vml.name)
                shutil.copy(root / "boot" / f"initrd.img-{kver}", d / f"initrd.img-{kver}")
                (esp / f"loader/entries/proxmox-{kver}.conf").write_text(
                    f"title Proxmox Virtual Environment\nversion {kver}\noptions {line}\n"
                    f"linux /EFI/proxmox/{kver}/vmlinuz-{kver}\n"
                    f"initrd /EFI/proxmox/{kver}/initrd.img-{kver}\n")
            self.pbt_refresh(esp)

    @staticmethod
    def pbt_refresh(esp: Path) -> None:
        """refresh: every line starting with 'default ' becomes 'default proxmox-*'."""
        conf = esp / "loader/loader.conf"
        lines = conf.read_text().splitlines() if conf.exists() else []
        out = ["default proxmox-*" if ln.startswith("default ") else ln for ln in lines]
        if not any(ln.startswith("default ") for ln in lines):
            out.append("default proxmox-*")
        conf.write_text("\n".join(out) + "\n")

    @staticmethod
    def pbt_reinit(esp: Path) -> None:
        """init/reinit: the whole file rewritten."""
        (esp / "loader/loader.conf").write_text("timeout 3\ndefault proxmox-*\n")

    # -- what systemd-boot would do ------------------------------------------------------
    def efi(self, name: str) -> str | None:
        return self.host.efivars.get(name)

    def booted(self, uuid: str) -> str | None:
        """The BE systemd-boot would boot from ESP ``uuid`` (EFI variables included)."""
        from beadm.esp import entries as ent
        from beadm.esp.store import EspStore
        from beadm.sdboot import resolve

        st = EspStore(self.esps[uuid], uuid)
        found = st.entry_files()
        eid = resolve.pick(st.root, found, oneshot=self.efi("LoaderEntryOneShot"),
                           efi_default=self.efi("LoaderEntryDefault"),
                           conf_default=st.loader_default())
        if eid is None:
            return None
        e = found[eid]
        for p in e.store_paths():
            assert (st.root / p).is_file(), f"{eid} names missing {p}"
        ds = e.root_dataset()
        assert ds is not None
        assert ent.entry_filename  # (keep the import used)
        return ds.rsplit("/", 1)[1]

    def files(self, uuid: str) -> list[str]:
        d = self.esps[uuid] / "beadm"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def entries(self, uuid: str) -> list[str]:
        d = self.esps[uuid] / "loader/entries"
        return sorted(p.name for p in d.iterdir() if p.name.startswith("beadm-"))


def tree_snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}
