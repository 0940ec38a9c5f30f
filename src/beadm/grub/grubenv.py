"""GRUB's environment block (``grub/grubenv``): what ``grub-editenv`` and ``save_env`` use.

A file of exactly 1024 bytes: ``# GRUB Environment Block`` and a newline, then one
``name=value`` line per variable (``\\`` escaped with a backslash), then ``#``
padding. GRUB's ``save_env`` rewrites it in place and refuses a file of another size, so a
rewrite must keep the size; beadm writes a whole new block and renames it over the old one.
"""

from __future__ import annotations

from beadm.errors import BootError

SIZE = 1024
HEADER = "# GRUB Environment Block\n"
NEXT_ENTRY = "next_entry"


def parse(data: bytes) -> dict[str, str] | None:
    """The variables of an environment block (None: not a valid block)."""
    if len(data) != SIZE or not data.startswith(HEADER.encode()):
        return None
    text = data[len(HEADER):].decode("utf-8", errors="replace")
    out: dict[str, str] = {}
    for line in text.split("\n"):
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        out[name] = _unescape(value)
    return out


def render(env: dict[str, str]) -> bytes:
    """A 1024-byte block holding ``env`` (BootError if it does not fit)."""
    body = HEADER + "".join(f"{k}={_escape(v)}\n" for k, v in env.items())
    data = body.encode("utf-8")
    if len(data) > SIZE:
        raise BootError("the GRUB environment block would exceed 1024 bytes")
    return data + b"#" * (SIZE - len(data))


def _escape(value: str) -> str:
    if "\n" in value:
        raise BootError(f"a GRUB environment value cannot hold a newline: {value!r}")
    return value.replace("\\", "\\\\")


def _unescape(value: str) -> str:
    out = []
    it = iter(value)
    for c in it:
        out.append(next(it, "") if c == "\\" else c)
    return "".join(out)
