"""Is this process chrooted inside its mount namespace?

beadm's ESP code enters a private mount namespace and leaves it with setns(2), which resets
the root directory to the namespace's root: run in a chroot (``beadm upgrade`` runs apt, and
so the kernel hooks that call beadm, chrooted in a clone), it would escape to the host's
root and change the host's ESPs. So boot-changing commands are refused there.

The test: the process's ancestors that share its mount namespace, up to the topmost one,
show the namespace's own root; a root of ours that differs from the topmost one's is a
chroot. A container or a ``unshare --mount`` + ``pivot_root`` tree is no chroot: its topmost
process (the one that pivoted, or the container's init) has the same root. Ancestors in
another mount namespace (the host's pid 1 seen from a tree with its own mount namespace)
are never compared. What cannot be read (no /proc, no permission) counts as no chroot.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def _ppid(proc: Path, pid: str) -> str | None:
    try:
        text = (proc / pid / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # after "(comm)", which may hold spaces
    return fields[1] if len(fields) > 1 else None


def _key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def in_chroot(proc: Path = PROC, pid: str = "self") -> bool:
    """True when process ``pid``'s root differs from that of its topmost ancestor in the
    same mount namespace."""
    me = _key(proc / pid / "ns" / "mnt")
    root = _key(proc / pid / "root")
    if me is None or root is None:
        return False
    if pid == "self":
        try:
            pid = str((proc / "self").readlink())  # the pid, in a real /proc too
        except OSError:
            return False
    top_root = root
    seen: set[str] = set()
    cur = _ppid(proc, pid)
    while cur is not None and cur not in ("0", "") and cur not in seen:
        seen.add(cur)
        if _key(proc / cur / "ns" / "mnt") != me:
            break
        key = _key(proc / cur / "root")
        if key is None:
            break
        top_root = key
        cur = _ppid(proc, cur)
    return top_root != root
