"""A Proxmox GRUB host made of directories, for the GRUB backend's unit tests.

Two ESPs (``BBBB-0001``, ``BBBB-0002``) as proxmox-boot-tool leaves them in GRUB mode
(lab/GRUB-FACTS.md): ``grub/`` with GRUB's 1024-byte ``grubenv``, the kept kernels at the ESP
root and a ``grub/grub.cfg`` as Debian's grub-mkconfig writes it from the BE that refreshed
(00_header's next_entry handling, one entry per kernel at the ESP root, 41_custom's source of
custom.cfg). :meth:`GrubWorld.boot` is a small GRUB: it runs that logic on the files (consuming
``next_entry`` as GRUB's ``save_env`` does) and says which dataset the chosen entry boots,
after checking that the kernel and initrd it names exist. It reads custom.cfg as GRUB script
lines, not through beadm's parser.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

from beadm.backend import BeRef
from beadm.esp.dirhost import DirHost
from beadm.grub.backend import GrubBackend
from worlds.sdboot import POOL, PropRunner

UUIDS = ("BBBB-0001", "BBBB-0002")
K1 = "6.8.12-1-pve"
K2 = "6.8.12-2-pve"
ENV_HEADER = b"# GRUB Environment Block\n"
CUSTOM_SNIPPET = """\
### BEGIN /etc/grub.d/41_custom ###
if [ -f  ${config_directory}/custom.cfg ]; then
  source ${config_directory}/custom.cfg
elif [ -z "${config_directory}" -a -f  $prefix/custom.cfg ]; then
  source $prefix/custom.cfg
fi
### END /etc/grub.d/41_custom ###
"""


def env_block(env: dict[str, str]) -> bytes:
    body = ENV_HEADER + b"".join(f"{k}={v}\n".encode() for k, v in env.items())
    return body + b"#" * (1024 - len(body))


def read_env(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    assert len(data) == 1024 and data.startswith(ENV_HEADER), "grubenv is not 1024 bytes"
    out = {}
    for line in data[len(ENV_HEADER):].decode().split("\n"):
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k] = v
    return out


def _unquote(word: str) -> str:
    return word[1:-1].replace("'\\''", "'") if word.startswith("'") else word


class GrubWorld:
    def __init__(self, tmp: Path, *, dry_run: bool = False) -> None:
        self.tmp = tmp
        self.etc = tmp / "etc-kernel"
        self.etc.mkdir(parents=True)
        (self.etc / "proxmox-boot-uuids").write_text("\n".join(UUIDS) + "\n")
        self.esps = {u: tmp / "esp" / u for u in UUIDS}
        (tmp / "efivars").mkdir()
        self.bes: dict[str, Path] = {}
        self.runner = PropRunner(dry_run=dry_run)
        self.out = io.StringIO()
        self.host = DirHost(self.etc, dict(self.esps), self.bes, tmp / "efivars",
                            dry_run=dry_run, out=self.out, kernel=K1,
                            cmdline=f"BOOT_IMAGE=/vmlinuz-{K1} root=ZFS={POOL}/ROOT/pve-1 ro "
                                    f"root=ZFS={POOL}/ROOT/pve-1 boot=zfs quiet")
        self.backend = GrubBackend(self.runner, host=self.host, out=self.out)
        for esp in self.esps.values():
            (esp / "grub/i386-pc").mkdir(parents=True)
            (esp / "grub/grubenv").write_bytes(env_block({}))
        self.add_be("pve-1", {K1: b"kernel-1", K2: b"kernel-2"})
        self.pbt_refresh("pve-1")

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
            (root / "etc/default/grub.d").mkdir(parents=True)
            # a legacy-BIOS install: no /etc/kernel/cmdline, the root in zfs.cfg
            (root / "etc/default/grub.d/zfs.cfg").write_text(
                f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX root=ZFS={POOL}/ROOT/pve-1 '
                'boot=zfs"\n')
            shutil.copy2(self.etc / "proxmox-boot-uuids", root / "etc/kernel")
        for kver, data in (kernels or {}).items():
            (root / "boot" / f"vmlinuz-{kver}").write_bytes(b"vmlinuz " + data)
            (root / "boot" / f"initrd.img-{kver}").write_bytes(b"initrd " + data * 10)
        self.bes[f"{POOL}/ROOT/{name}"] = root
        return root

    def rename_be(self, old: str, new: str) -> None:
        self.bes[f"{POOL}/ROOT/{new}"] = self.bes.pop(f"{POOL}/ROOT/{old}")

    # -- proxmox-boot-tool refresh in GRUB mode, as read (lab/GRUB-FACTS.md) ----------
    def pbt_refresh(self, be: str, *, custom: bool = True) -> None:
        """Kernels of BE ``be`` to each ESP root (others there deleted), then grub.cfg as
        update-grub writes it inside ``be`` (its root from 10_linux, then zfs.cfg's)."""
        ds = f"{POOL}/ROOT/{be}"
        root = self.bes[ds]
        zfs = (root / "etc/default/grub.d/zfs.cfg").read_text()
        extra = re.search(r'GRUB_CMDLINE_LINUX="\$GRUB_CMDLINE_LINUX ([^"]*)"', zfs)
        cmdline = f"root=ZFS={ds} ro {extra.group(1) if extra else ''} quiet".strip()
        kvers = sorted(p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*"))
        for esp in self.esps.values():
            for old in [*esp.glob("vmlinuz-*"), *esp.glob("initrd.img-*")]:
                if old.name.split("-", 1)[1] not in kvers:
                    old.unlink()
            for k in kvers:
                shutil.copy(root / "boot" / f"vmlinuz-{k}", esp / f"vmlinuz-{k}")
                shutil.copy(root / "boot" / f"initrd.img-{k}", esp / f"initrd.img-{k}")
            entries = "".join(
                f"menuentry 'Proxmox VE GNU/Linux, with Linux {k}' --class proxmox "
                f"--id 'gnulinux-{k}-advanced-abc' {{\n"
                f"\tsearch --no-floppy --fs-uuid --set=root {esp.name}\n"
                f"\tlinux /vmlinuz-{k} {cmdline}\n\tinitrd /initrd.img-{k}\n}}\n"
                for k in reversed(kvers))
            header = ('if [ -s $prefix/grubenv ]; then\n  set have_grubenv=true\n  load_env\nfi\n'
                      'if [ "${next_entry}" ] ; then\n   set default="${next_entry}"\n'
                      '   set next_entry=\n   save_env next_entry\n   set boot_once=true\n'
                      'else\n   set default="0"\nfi\n')
            (esp / "grub/grub.cfg").write_text(header + entries + (CUSTOM_SNIPPET if custom
                                                                    else ""))

    # -- a small GRUB ------------------------------------------------------------------
    def boot(self, uuid: str) -> str | None:
        """Boot from ESP ``uuid``: the BE whose dataset the chosen entry mounts as root."""
        esp = self.esps[uuid]
        env = read_env(esp / "grub/grubenv")
        cfg = (esp / "grub/grub.cfg").read_text()
        default, boot_once = "0", False
        if env.get("next_entry"):
            default, boot_once = env.pop("next_entry"), True
            (esp / "grub/grubenv").write_bytes(env_block({**env, "next_entry": ""}))
        custom = ""
        if "source $prefix/custom.cfg" in cfg and (esp / "grub/custom.cfg").is_file():
            custom = (esp / "grub/custom.cfg").read_text()
        entries: list[tuple[str, list[str]]] = []
        cond_ok = True
        cur: list[str] | None = None
        # grub.cfg's header (00_header) is what the lines above emulate: from grub.cfg only
        # its entries count; custom.cfg is read as GRUB would run it
        lines = [ln for ln in cfg.splitlines() if not ln.strip().startswith(("set ", "if ",
                                                                              "else", "fi"))]
        for line in [*lines, *custom.splitlines()]:
            s = line.strip()
            if s.startswith("menuentry "):
                m = re.search(r"--id ('[^']*'|\S+)", s)
                cur = []
                entries.append((_unquote(m.group(1)) if m else "", cur))
            elif s == "}":
                cur = None
            elif cur is not None:
                cur.append(s)
            elif s.startswith('if [ "${boot_once}" != "true" ]'):
                cond_ok = not boot_once
            elif s == "fi":
                cond_ok = True
            elif s.startswith("set default=") and cond_ok and "${" not in s:
                default = _unquote(s[len("set default="):])
        if default.isdigit():
            chosen = entries[int(default)] if int(default) < len(entries) else None
        else:
            chosen = next((e for e in entries if e[0] == default), None)
            if chosen is None:  # GRUB falls back to the first entry
                chosen = entries[0] if entries else None
        if chosen is None:
            return None
        root = None
        for s in chosen[1]:
            words = s.split()
            if words and words[0] in ("linux", "initrd"):
                path = _unquote(words[1])
                assert (esp / path.lstrip("/")).is_file(), f"{chosen[0]} names missing {path}"
                if words[0] == "linux":
                    roots = [_unquote(w)[len("root=ZFS="):] for w in words[2:]
                             if _unquote(w).startswith("root=ZFS=")]
                    root = roots[-1] if roots else None
        return root.rsplit("/", 1)[1] if root else None

    def next_entry(self, uuid: str) -> str:
        return read_env(self.esps[uuid] / "grub/grubenv").get("next_entry", "")

    def files(self, uuid: str) -> list[str]:
        d = self.esps[uuid] / "beadm"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []
