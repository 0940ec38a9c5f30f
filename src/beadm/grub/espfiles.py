"""GRUB's files on one ESP: beadm's menu (``grub/custom.cfg``), the one-shot ``next_entry``
in ``grub/grubenv``, the kernel files the menu names, and the dataset ``grub.cfg``'s first
entry (Proxmox's) boots."""

from __future__ import annotations

import re

from beadm.backend import BeRef
from beadm.errors import BootError
from beadm.esp import entries as ent
from beadm.esp.host import Esp
from beadm.esp.plan import Plan
from beadm.esp.store import EspStore, content_name
from beadm.grub import grubenv, menu
from beadm.grub.menu import CUSTOM_CFG, GRUB_CFG, GRUBENV, Item, Menu

_LINUX = re.compile(r"^\s*linux\s+(\S+)(.*)$")


def read_menu(st: EspStore) -> Menu:
    """beadm's menu on ``st`` (empty when there is none yet); refuses a custom.cfg
    beadm did not write: it is the admin's, and beadm would overwrite it."""
    text = st.read_text(CUSTOM_CFG)
    if text is None:
        return Menu()
    found = menu.parse(text)
    if found is None:
        raise BootError(f"ESP {st.uuid}: /{CUSTOM_CFG} was not written by beadm: move its "
                        "entries to /etc/grub.d/40_custom and remove it, then retry")
    return found

def put_items(st: EspStore, plan: Plan) -> tuple[Item, ...]:
    """Store ``plan``'s kernel files on ``st`` (files first), return its menu items."""
    out = []
    for k in plan.kernels:
        linux = st.put_file(k.vmlinuz, f"vmlinuz-{k.kver}")
        initrd = st.put_file(k.initrd, f"initrd.img-{k.kver}")
        out.append(Item(be=plan.be.name, kver=k.kver,
                        title=ent.title_for(plan.be.name, plan.be.description, k.kver),
                        options=plan.options, linux=linux, initrd=initrd))
    return tuple(out)

def want_items(plan: Plan, stores: list[EspStore]) -> tuple[Item, ...]:
    """The items of ``plan`` as they must be, without writing anything."""
    return tuple(
        Item(be=plan.be.name, kver=k.kver,
             title=ent.title_for(plan.be.name, plan.be.description, k.kver),
             options=plan.options,
             linux=f"/{ent.STORE_DIR}/" + content_name(k.vmlinuz, f"vmlinuz-{k.kver}",
                                                      stores),
             initrd=f"/{ent.STORE_DIR}/" + content_name(k.initrd,
                                                       f"initrd.img-{k.kver}", stores))
        for k in plan.kernels)

def write(st: EspStore, m: Menu) -> None:
    st.write_text(CUSTOM_CFG, m.render(st.uuid))

def gc(st: EspStore) -> None:
    """Free store files no menu item names (after the menu was written)."""
    text = st.read_text(CUSTOM_CFG)
    m = menu.parse(text) if text is not None else Menu()
    if m is None:
        return  # not beadm's menu: it cannot say what is in use, so nothing is freed
    st.gc(referenced=m.store_paths())

def env(st: EspStore) -> dict[str, str]:
    try:
        data = (st.root / GRUBENV).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return grubenv.parse(data) or {}

def set_next(st: EspStore, entry: str | None) -> None:
    """``next_entry`` in the ESP's grubenv (None: removed), the rest of the block kept."""
    path = st.root / GRUBENV
    try:
        env = grubenv.parse(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        env = {} if path.parent.is_dir() else None
    if env is None:
        raise BootError(f"ESP {st.uuid}: /{GRUBENV} is not a GRUB environment block "
                        "(is GRUB installed on it? run 'proxmox-boot-tool reinit')")
    new = dict(env)
    if entry is None:
        new.pop(grubenv.NEXT_ENTRY, None)
    else:
        new[grubenv.NEXT_ENTRY] = entry
    if new != env:
        st.write_text(GRUBENV, grubenv.render(new).decode("utf-8"))


def grubcfg_root(text: str) -> str | None:
    """The dataset the first ``linux`` line of a grub.cfg boots (its last ``root=ZFS=``)."""
    for line in text.splitlines():
        m = _LINUX.match(line)
        if m:
            roots = [w[len("root=ZFS="):] for w in m.group(2).split() if w.startswith("root=ZFS=")]
            return roots[-1] if roots else None
    return None


def fallback_dead(esps: list[Esp], be: BeRef) -> tuple[str, ...]:
    """The ESPs whose grub.cfg (Proxmox's entries) boots ``be``."""
    dead = []
    for esp in esps:
        st = esp.store
        if st is not None and grubcfg_root(st.read_text(GRUB_CFG) or "") == be.dataset:
            dead.append(st.uuid)
    return tuple(dead)
