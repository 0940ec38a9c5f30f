"""A fake Proxmox host for beadm.statemove: ZFS datasets, mounts and services in memory, files
in a temp directory.

The running BE's files are ``<tmp>/root`` (its ``root_dir``). Each dataset outside the BE
keeps its files in ``<tmp>/ds/<name>``. Mounting a dataset on a directory replaces the
directory by a symlink to the dataset's files; mounting it over a path of the BE first
moves the BE's own files there to ``<tmp>/shadow`` (hidden, as under a real mount), where a
bind mount of the BE root (``mount --bind``) shows them again (moved there, real
directories, until the ``umount``). Since mounts are links here, :meth:`PveWorld.lstat`
(given to the mover) shows a mounted path as the directory it is on a real host; any other
link is a link. ``<tmp>/proc`` is the mover's ``/proc`` (:meth:`PveWorld.hold` puts a
process there). Services are a set of active unit names (stopping one ends its processes
there). ``kill_at`` makes the mover's step hook raise :class:`Killed`, and from then on
every command raises it too: nothing the dead process would not have done happens.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from beadm.runner import Result
from worlds.fakes import FakeRunner
from worlds.pool import LIST_FS_ARGV, row

POOL = "rpool"
BE = "rpool/ROOT/pve-1"


class Killed(BaseException):
    """SIGKILL, as the test sees it."""


class PveWorld:
    def __init__(self, tmp: Path, *, datasets: dict[str, dict[str, str]] | None = None,
                 active: set[str] | None = None) -> None:
        self.tmp = tmp
        self.root = tmp / "root"
        self.root.mkdir()
        (tmp / "ds").mkdir()
        (tmp / "shadow").mkdir()
        (tmp / "t").mkdir()
        self.proc = tmp / "proc"
        self.proc.mkdir()
        self.sys_block = tmp / "sys-block"
        self.sys_block.mkdir()
        self.mountinfo = tmp / "mountinfo"
        self.ds: dict[str, dict[str, str]] = {
            POOL: {"mountpoint": "/rpool", "canmount": "on", "available": str(1 << 30)},
            "rpool/ROOT": {"mountpoint": "/rpool/ROOT", "canmount": "off"},
            BE: {"mountpoint": "/", "canmount": "on"},
            "rpool/ROOT/pve-2": {"mountpoint": "/", "canmount": "noauto"},
        }
        self.ds.update(datasets or {})
        for name in self.ds:
            self.files(name).mkdir(parents=True, exist_ok=True)
        self.mounts: list[tuple[str, str]] = [(BE, str(self.root))]
        self.active = set(active or ())
        self.requires = {"pve-cluster.service": ["pvedaemon.service", "pve-ha-lrm.service"]}
        self.dead = False
        self.kill_at: str | None = None
        self.steps: list[str] = []
        self.runner = FakeRunner()
        self._write_mountinfo()
        self._wire()

    # -- state -------------------------------------------------------------------------------

    def files(self, name: str) -> Path:
        if name == BE:
            return self.root
        return self.tmp / "ds" / name.replace("/", "_")

    def live(self, path: str) -> Path:
        return Path(str(self.root) + path)

    def _write_mountinfo(self) -> None:
        lines = [f"{i} 1 0:{i} / {mp} rw - zfs {src} rw\n"
                 for i, (src, mp) in enumerate(self.mounts, 20)]
        self.mountinfo.write_text("".join(lines))

    def lstat(self, path: str) -> os.stat_result:
        """``os.lstat`` as on a real host: a mount point (a link here) is a directory."""
        if any(mp == path for _, mp in self.mounts):
            return Path(path).stat()
        return os.lstat(path)

    def hold(self, pid: int, comm: str, *, fd: str = "", cwd: str = "/", root: str = "/",
             maps: str = "", mountinfo: str = "", unit: str = "user@0.service") -> None:
        """A process in ``<tmp>/proc``: ``fd`` open, ``maps`` mapped (paths), ``cwd``,
        ``root``, its own mount namespace with ``mountinfo``, in the cgroup of ``unit``."""
        d = self.proc / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "ns").mkdir()
        (d / "comm").write_text(comm + "\n")
        if fd:
            (d / "fd" / "3").symlink_to(fd)
        (d / "fd" / "0").symlink_to("/dev/null")
        (d / "fd" / "1").symlink_to("socket:[4711]")
        (d / "cwd").symlink_to(cwd)
        (d / "root").symlink_to(root)
        (d / "ns" / "mnt").symlink_to(f"mnt:[{4026531840 + (pid if mountinfo else 0)}]")
        (d / "mountinfo").write_text(mountinfo)
        (d / "maps").write_text(
            "55d0c0a00000-55d0c0a21000 r--p 00000000 00:1a 1234    /usr/bin/kvm\n"
            + (f"7f0000000000-7f0000001000 rw-s 00000000 00:1b 99    {maps}\n" if maps else "")
            + "7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0      [stack]\n")
        (d / "cgroup").write_text(f"0::/system.slice/{unit}\n")

    def step(self, name: str) -> None:
        self.steps.append(name)
        if self.dead or name == self.kill_at:
            self.dead = True
            raise Killed(name)

    # -- the fake commands -------------------------------------------------------------------

    def _wire(self) -> None:
        r = self.runner
        original = r.run

        def run(argv: object, *, readonly: bool = False, check: bool = True) -> Result:
            if self.dead:
                raise Killed("dead")
            args = tuple(argv)  # type: ignore[call-overload]
            if args[:len(LIST_FS_ARGV)] == LIST_FS_ARGV:
                original(args, readonly=readonly, check=check)
                return Result(args, 0, self._list(args[-1]), "")
            if args[:5] == ("zfs", "get", "-H", "-p", "-o") and args[5] == "value":
                original(args, readonly=readonly, check=check)
                return Result(args, 0, self.ds[args[7]].get(args[6], "-") + "\n", "")
            if args[:2] == ("systemctl", "list-units"):
                original(args, readonly=readonly, check=check)
                out = "".join(f"{u} loaded active running x\n" for u in sorted(self.active))
                return Result(args, 0, out, "")
            if args[:2] == ("systemctl", "show"):
                original(args, readonly=readonly, check=check)
                deps = " ".join(self.requires.get(args[-1], []))
                return Result(args, 0, f"RequiredBy={deps}\nBoundBy=\n", "")
            res = original(args, readonly=readonly, check=check)
            if not readonly and not r.dry_run:
                self._apply(args)
            return res

        r.run = run  # type: ignore[method-assign]

    def _list(self, top: str) -> str:
        out = []
        mounted = {src for src, _ in self.mounts}
        for name, p in sorted(self.ds.items()):
            if name == top or name.startswith(top + "/"):
                out.append(row(name, mountpoint=p.get("mountpoint", "-"),
                               canmount=p.get("canmount", "on"),
                               mounted="yes" if name in mounted else "no",
                               state=p.get("org.beadm:state", "-")))
        return "".join(out)

    def _apply(self, a: tuple[str, ...]) -> None:
        if a[:2] == ("zfs", "create"):
            props = dict(a[i + 1].split("=", 1) for i in range(2, len(a) - 1, 2))
            assert a[-1] not in self.ds
            self.ds[a[-1]] = props
            self.files(a[-1]).mkdir()
        elif a[:2] == ("zfs", "destroy"):
            assert a[-1] not in {src for src, _ in self.mounts}, "destroy of a mounted dataset"
            del self.ds[a[-1]]
            shutil.rmtree(self.files(a[-1]))
        elif a[:2] == ("zfs", "set"):
            k, v = a[2].split("=", 1)
            self.ds[a[3]][k] = v
        elif a[:2] == ("zfs", "inherit"):
            for name in a[3:]:
                self.ds[name].pop(a[2], None)
        elif a[:2] == ("zfs", "mount"):
            self._mount_over(a[2], str(self.live(self.ds[a[2]]["mountpoint"])))
        elif a[:3] == ("mount", "-t", "zfs"):
            target = Path(a[-1])
            assert target.is_dir() and not any(target.iterdir())
            target.rmdir()
            target.symlink_to(self.files(a[-2]))
            self.mounts.append((a[-2], str(target)))
        elif a[:2] == ("mount", "--bind"):
            assert a[2] == str(self.root)
            target = Path(a[3])
            for rel in self._shadows():
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                (self.tmp / "shadow" / rel / "data").rename(target / rel)
            self.mounts.append(("bind", str(target)))
        elif a[0] == "umount":
            target = a[-1]
            src = next(s for s, mp in reversed(self.mounts) if mp == target)
            self.mounts.remove((src, target))
            p = Path(target)
            if src == "bind":
                for rel in self._shadows():
                    (p / rel).rename(self.tmp / "shadow" / rel / "data")
                shutil.rmtree(p)
                p.mkdir()
            else:
                p.unlink()
                p.mkdir()
        elif a[:2] == ("cp", "-a"):
            shutil.copytree(a[3].rstrip("."), a[4], symlinks=True, dirs_exist_ok=True)
        elif a[:2] == ("systemctl", "stop"):
            for u in a[2:]:
                self.active.discard(u)
                for d in self.requires.get(u, []):
                    self.active.discard(d)
            for pid in list(self.proc.iterdir()):  # their processes end
                cgroup = pid / "cgroup"
                if cgroup.exists() and cgroup.read_text().strip().rpartition("/")[2] in a[2:]:
                    shutil.rmtree(pid)
        elif a[:2] == ("systemctl", "start"):
            self.active.update(a[2:])
        self._write_mountinfo()

    def _shadows(self) -> list[Path]:
        return [shadow.parent.relative_to(self.tmp / "shadow")
                for shadow in (self.tmp / "shadow").rglob(".shadowed")]

    def _mount_over(self, name: str, live: str) -> None:
        p = Path(live)
        if p.is_dir() and not p.is_symlink():
            rel = p.relative_to(self.root)
            shadow = self.tmp / "shadow" / rel
            shadow.mkdir(parents=True)
            (shadow / ".shadowed").touch()
            p.rename(shadow / "data")
        p.symlink_to(self.files(name))
        self.mounts.append((name, live))

    def shadowed(self, path: str) -> Path:
        """The BE's own directory under a mount at ``path``."""
        return self.tmp / "shadow" / path.lstrip("/") / "data"
