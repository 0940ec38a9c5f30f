"""``/etc/beadm/beadm.conf``: ``key = value`` lines, ``#`` comments, every key optional.

A missing file is the defaults. A line that is not ``key = value``, an unknown key or a
bad value is a :class:`UsageError` naming the file and the line (one line, exit 2),
never a traceback, and the command changes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from beadm.errors import UsageError
from beadm.record import field, record

if TYPE_CHECKING:  # imported where a file is read: every command reads CONFIG_PATH's name,
    # only prune and the apt hook read the file (start-up time, issue 15)
    from beadm.retention import Floor, Policy

CONFIG_PATH = Path("/etc/beadm/beadm.conf")

#: Every key, with its default as written in the file (beadm(8), FILES, says the same).
DEFAULTS = {
    "auto_snapshot": "no",
    "keep": "10",
    "keep_important": "5",
    "pool_min_free": "20%",
    "esp_min_free": "10%",
}

_SIZE = re.compile(r"^(\d+)([KMGT]?)$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _default_policy() -> Policy:
    from beadm.retention import Policy

    return Policy()


@record
class Config:
    auto_snapshot: bool = False
    policy: Policy = field(default_factory=_default_policy)


def load(path: Path = CONFIG_PATH) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return parse("", path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    return parse(text, path)


def parse(text: str, path: Path = CONFIG_PATH) -> Config:
    from beadm.retention import Policy

    values = dict(DEFAULTS)
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (p.strip() for p in line.partition("="))
        where = f"{path} line {n}"
        if not sep or not key:
            raise UsageError(f"{where}: expected 'key = value', got {line[:60]!r}")
        if key not in DEFAULTS:
            raise UsageError(f"{where}: unknown key {key[:40]!r} "
                             f"(known: {', '.join(DEFAULTS)})")
        values[key] = value
        _value(key, value, where)  # checked here, so the error names the line
    return Config(
        auto_snapshot=_value("auto_snapshot", values["auto_snapshot"], "") is True,
        policy=Policy(
            keep=int(values["keep"]),
            keep_important=int(values["keep_important"]),
            pool_min_free=_floor(values["pool_min_free"]),
            esp_min_free=_floor(values["esp_min_free"]),
        ),
    )


def _value(key: str, value: str, where: str) -> object:
    if key == "auto_snapshot":
        if value.lower() in ("yes", "true", "on", "1"):
            return True
        if value.lower() in ("no", "false", "off", "0"):
            return False
        raise UsageError(f"{where}: auto_snapshot must be yes or no, got {value[:40]!r}")
    if key in ("keep", "keep_important"):
        if not value.isascii() or not value.isdigit() or int(value) > 10_000:
            raise UsageError(f"{where}: {key} must be a number from 0 to 10000, "
                             f"got {value[:40]!r}")
        if key == "keep" and int(value) < 1:
            raise UsageError(f"{where}: keep must be at least 1 (the snapshot just taken)")
        return int(value)
    try:
        return _floor(value)
    except ValueError:
        raise UsageError(f"{where}: {key} must be a percentage (20%) or a size "
                         f"(50G; K, M, G, T), got {value[:40]!r}") from None


def _floor(value: str) -> Floor:
    from beadm.retention import Floor

    v = value.strip().upper()
    if v.endswith("%"):
        num = v[:-1]
        if not re.fullmatch(r"\d+(\.\d+)?", num) or float(num) > 100:
            raise ValueError(value)
        return Floor(percent=float(num))
    m = _SIZE.match(v)
    if m is None:
        raise ValueError(value)
    return Floor(bytes=int(m.group(1)) * _UNITS[m.group(2)])
