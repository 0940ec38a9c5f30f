"""GRUB's drift on one ESP: beadm's menu against what it must be, grub.cfg reading it,
grubenv, and the kernel files the menu names (``check``)."""

from __future__ import annotations

from beadm.esp import entries as ent
from beadm.esp.store import EspStore
from beadm.grub import grubenv, menu
from beadm.grub.menu import CUSTOM_CFG, GRUB_CFG, GRUBENV, Menu


def check_esp(st: EspStore, want: Menu) -> list[str]:
    where = f"ESP {st.uuid}"
    out: list[str] = []
    text = st.read_text(CUSTOM_CFG)
    if text is None:
        out.append(f"{where}: /{CUSTOM_CFG} is missing")
    elif not menu.is_beadm(text):
        out.append(f"{where}: /{CUSTOM_CFG} was not written by beadm")
    elif text != want.render(st.uuid):
        have = menu.parse(text) or Menu()
        if have.default != want.default:
            out.append(f"{where}: GRUB default is {have.default!r}, should be "
                       f"{want.default!r}")
        for i in want.items:
            if i not in have.items:
                out.append(f"{where}: GRUB entry {i.id} is missing or out of date")
        for i in have.items:
            if i.id not in want.ids():
                out.append(f"{where}: GRUB entry {i.id} belongs to no BE or kernel")
        if not out:
            out.append(f"{where}: /{CUSTOM_CFG} is out of date")
    cfg = st.read_text(GRUB_CFG)
    if cfg is None:
        out.append(f"{where}: /{GRUB_CFG} is missing (run 'proxmox-boot-tool refresh')")
    elif "custom.cfg" not in cfg:
        out.append(f"{where}: /{GRUB_CFG} does not read custom.cfg: beadm's entries are "
                   "not in GRUB's menu (restore /etc/grub.d/41_custom, then run "
                   "'proxmox-boot-tool refresh')")
    if (st.root / GRUBENV).exists() and grubenv.parse((st.root / GRUBENV).read_bytes()) \
            is None:
        out.append(f"{where}: /{GRUBENV} is not a valid GRUB environment block")
    parsed = menu.parse(text) if text is not None else None
    for rel in sorted(parsed.store_paths() if parsed else set()):
        if not st.has(rel):
            out.append(f"{where}: GRUB menu names missing file /{rel}")
    used = parsed.store_paths() if parsed else set()
    for name in st.store_files():
        if f"{ent.STORE_DIR}/{name}" not in used:
            out.append(f"{where}: /{ent.STORE_DIR}/{name} is referenced by no entry")
    return out
