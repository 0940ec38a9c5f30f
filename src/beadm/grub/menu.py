"""beadm's GRUB menu: ``grub/custom.cfg`` on each ESP, which Proxmox's grub.cfg sources.

One file per ESP, always written whole: a header (what it is, and the ``set default`` of the
activated BE, skipped when GRUB took a one-shot ``next_entry``), then one ``menuentry`` per BE
and kernel, with id ``beadm-<BE>-<kver>``. Each entry finds its own ESP by FAT volume id and
boots the kernel and initrd from the ``/beadm/`` store with the BE's own command line. Every
entry and the header also carry their data as a JSON comment, which is what :func:`parse`
reads back (GRUB ignores comments); ``check`` compares the whole file with what it should be.
"""

from __future__ import annotations

import json
import re

from beadm.esp.kernels import version_key
from beadm.record import record, replace

CUSTOM_CFG = "grub/custom.cfg"
GRUB_CFG = "grub/grub.cfg"
GRUBENV = "grub/grubenv"
ID_PREFIX = "beadm-"
MARK = "# beadm: GRUB menu of boot environments"
_SAFE = re.compile(r"^[A-Za-z0-9_.,:/=+@%-]+$")


def entry_id(be: str, kver: str) -> str:
    return f"{ID_PREFIX}{be}-{kver}"


def quote(word: str) -> str:
    """``word`` as one GRUB script word (single quotes; a quote as ``'\\''``)."""
    return "'" + word.replace("'", "'\\''") + "'"


def _arg(word: str) -> str:
    return word if _SAFE.match(word) else quote(word)


@record
class Item:
    """One menu entry: BE ``be`` with kernel ``kver`` (paths on the ESP, ``/beadm/...``)."""

    be: str
    kver: str
    title: str
    options: str
    linux: str
    initrd: str

    @property
    def id(self) -> str:
        return entry_id(self.be, self.kver)

    def store_paths(self) -> set[str]:
        return {p.lstrip("/") for p in (self.linux, self.initrd)}

    def render(self, uuid: str) -> str:
        data = json.dumps({"be": self.be, "kver": self.kver, "title": self.title,
                           "options": self.options, "linux": self.linux,
                           "initrd": self.initrd}, sort_keys=True)
        args = " ".join(_arg(w) for w in self.options.split())
        return "\n".join([
            f"menuentry {quote(self.title)} --class gnu-linux --class os --id {quote(self.id)} {{",
            f"\t# beadm-item {data}",
            "\tinsmod part_gpt",
            "\tinsmod part_msdos",
            "\tinsmod fat",
            f"\tsearch --no-floppy --fs-uuid --set=root {_arg(uuid)}",
            f"\techo {quote(f'Loading BE {self.be}, Linux {self.kver} ...')}",
            f"\tlinux {_arg(self.linux)} {args}".rstrip(),
            f"\tinitrd {_arg(self.initrd)}",
            "}",
            "",
        ])


@record
class Menu:
    """Everything beadm's custom.cfg on one ESP says."""

    items: tuple[Item, ...] = ()
    default: str | None = None  # an item id: the activated BE's entry

    def ids(self) -> set[str]:
        return {i.id for i in self.items}

    def of_be(self, be: str) -> tuple[Item, ...]:
        return tuple(i for i in self.items if i.be == be)

    def bes(self) -> set[str]:
        return {i.be for i in self.items}

    def store_paths(self) -> set[str]:
        return {p for i in self.items for p in i.store_paths()}

    def with_be(self, be: str, items: tuple[Item, ...], *, replacing: str | None = None) -> Menu:
        """BE ``be``'s entries replaced by ``items`` (and ``replacing``'s dropped); sorted."""
        keep = [i for i in self.items if i.be not in (be, replacing)]
        return replace(self, items=sort_items([*keep, *items]))

    def render(self, uuid: str) -> str:
        head = json.dumps({"default": self.default, "esp": uuid}, sort_keys=True)
        lines = [
            MARK,
            "# Written by beadm on every ESP; grub.cfg reads it through Debian's",
            "# /etc/grub.d/41_custom. 'beadm sync' rewrites it: add your own entries",
            "# to /etc/grub.d/40_custom instead.",
            f"# beadm-menu {head}",
        ]
        if self.default is not None:
            lines += ['if [ "${boot_once}" != "true" ]; then',
                      f"\tset default={quote(self.default)}",
                      "fi"]
        lines.append("")
        return "\n".join(lines) + "\n".join(i.render(uuid) for i in sort_items(self.items))


def sort_items(items: list[Item] | tuple[Item, ...]) -> tuple[Item, ...]:
    """By BE name, each BE's newest kernel first."""
    by_kver = sorted(items, key=lambda i: version_key(i.kver), reverse=True)
    return tuple(sorted(by_kver, key=lambda i: i.be))


def is_beadm(text: str) -> bool:
    return text.startswith(MARK)


def parse(text: str) -> Menu | None:
    """What a custom.cfg written by beadm says (None: the file is not beadm's)."""
    if not is_beadm(text):
        return None
    default: str | None = None
    items: list[Item] = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("# beadm-menu "):
            head = json.loads(s[len("# beadm-menu "):])
            d = head.get("default")
            default = d if isinstance(d, str) else None
        elif s.startswith("# beadm-item "):
            d = json.loads(s[len("# beadm-item "):])
            items.append(Item(be=str(d["be"]), kver=str(d["kver"]), title=str(d["title"]),
                              options=str(d["options"]), linux=str(d["linux"]),
                              initrd=str(d["initrd"])))
    return Menu(tuple(items), default)
