"""``loader/loader.conf``: reading and replacing the ``default`` line.

Proxmox's ``refresh`` rewrites every line starting with ``default `` to
``default proxmox-*``; ``init``/``reinit`` rewrite the whole file. beadm sets one
``default`` line (replacing every existing one, keeping all other lines) and re-asserts
it from its hooks after Proxmox's.
"""

from __future__ import annotations


def get_default(text: str) -> str | None:
    """The pattern of the last ``default`` line (systemd-boot keeps the last one)."""
    found = None
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "default" and value.strip():
            found = value.strip()
    return found


def set_default(text: str, pattern: str) -> str:
    """``text`` with exactly one ``default pattern`` line, at the first one's place."""
    out: list[str] = []
    placed = False
    for line in text.splitlines():
        if line.strip().partition(" ")[0] == "default":
            if not placed:
                out.append(f"default {pattern}")
                placed = True
            continue
        out.append(line)
    if not placed:
        out.append(f"default {pattern}")
    return "\n".join(out) + "\n"


DEFAULT_TEXT = "timeout 3\n"  # what a missing loader.conf is created with (then a default)
