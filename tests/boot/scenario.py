"""What the systemd-boot boot scenarios share (tests/boot/test_*.py): the shell helpers every
step can call, ``steps`` that prefixes each step with them, and ``ok`` that checks a run."""

from __future__ import annotations

# shell helpers available in every step
LIB = r"""
V=4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
efivar() { local f=/sys/firmware/efi/efivars/$1-$V
    [ -e "$f" ] && cat "$f" | tail -c +5 | iconv -f UTF-16LE -t UTF-8 | tr -d '\000'; true; }
root_is() { local r; r=$(findmnt -no SOURCE /)
    [ "$r" = "$1" ] || { echo "root is $r, not $1"; exit 1; }; }
flags() { beadm list -H | awk -F'\t' -v be="$1" '$1 == be { print $2 }'; }
# beadm where a host has it, on systemd's PATH (beadm-reassert.service's ExecStop runs
# `beadm sync --if-used` at shutdown; the steps' own beadm is only on the steps' PATH)
beadm_as_on_a_host() {
    mkdir -p /usr/local/lib/beadm && cp -r /src/src/beadm /usr/local/lib/beadm/
    printf '#!/bin/sh\nPYTHONPATH=/usr/local/lib/beadm exec python3 -m beadm "$@"\n' \
        > /usr/local/sbin/beadm
    chmod 755 /usr/local/sbin/beadm; }
# run a command with both ESPs mounted read-only at /run/t/esp1 /run/t/esp2 (private namespace;
# ESP1/ESP2 name other volume ids, e.g. after a replaced disk)
on_esps() { unshare --mount --propagation private sh -c '
    mkdir -p /run/t/esp1 /run/t/esp2
    mount -o ro /dev/disk/by-uuid/'"${ESP1:-C0DE-0001}"' /run/t/esp1
    mount -o ro /dev/disk/by-uuid/'"${ESP2:-C0DE-0002}"' /run/t/esp2
    '"$1"; }
"""


def steps(*bodies: str) -> list[str]:
    return [LIB + b for b in bodies]


def ok(res: object) -> None:
    assert getattr(res, "returncode", 1) == 0, getattr(res, "output", "")
