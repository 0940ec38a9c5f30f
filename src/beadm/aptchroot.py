"""apt inside a clone of the running BE, in a chroot (for ``beadm upgrade``, beadm.upgrade),
and the package changes it made.

The clone's datasets are mounted in a mount namespace of beadm's own (a slave of the
host's, as the systemd-boot backend's sessions use): nothing mounted here ever appears
on the host, and a kill of beadm takes every mount with it (once apt, a child, ends).
Inside the chroot:

- ``/proc`` and ``/sys`` are fresh mounts (``/sys`` read-only, without ``efivarfs``:
  nothing inside can write an EFI variable such as ``LoaderEntryDefault``); ``/dev`` is
  the host's (a recursive bind: ``/dev/pts`` for apt); ``/run`` is an empty ``tmpfs``,
  not the host's, so that no maintainer script reaches the running host's systemd or
  daemons through their sockets.
- The BE's ESP list (``/etc/kernel/proxmox-boot-uuids``, and the pre-6.4
  ``pve-efiboot-uuids``) has an empty file bound over it for the duration: Proxmox's
  kernel hooks (``zz-proxmox-boot``, ``proxmox-boot-sync``) then find no ESP and do
  nothing, so they cannot rewrite the ``proxmox-*.conf`` entries to the clone's cmdline
  nor ``loader.conf``'s ``default`` on any ESP; beadm's own ``zzz-beadm`` hook exits at
  once on an empty list too (and ``beadm`` itself refuses ESP work in a chroot). The
  file inside the clone is not changed: the bind goes with the namespace.
- ``/usr/sbin/policy-rc.d`` exits 101 (no daemon starts or restarts): an existing one
  has ours bound over it; where there is none, ours is written and removed afterwards.
- apt runs as ``chroot DIR env DEBIAN_FRONTEND=noninteractive apt-get -o
  Dpkg::Options::=--force-confold ARGS``; ``dpkg-query -W`` before and after gives the
  package changes.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, TextIO

from beadm import aptinfo, confined, debversion
from beadm.record import record
from beadm.runner import LineSink, Result, Runner
from beadm.zfs import mount_argv

POLICY_RC_D = Path("usr/sbin/policy-rc.d")
POLICY_TEXT = ("#!/bin/sh\n# beadm upgrade: no daemon starts or restarts in the BE being "
               "upgraded\nexit 101\n")
ESP_LISTS = (Path("etc/kernel/proxmox-boot-uuids"), Path("etc/kernel/pve-efiboot-uuids"))
DPKG_QUERY = ("dpkg-query", "-W", "-f", "${binary:Package}\\t${Version}\\t${db:Status-Abbrev}\\n")
APT_ENV = ("env", "DEBIAN_FRONTEND=noninteractive", "APT_LISTCHANGES_FRONTEND=none")
APT_OPTS = ("-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Options::=--force-confdef")


@record
class Change:
    """One package that the upgrade changed: ``upgraded`` or ``downgraded`` (old and new
    version, compared as dpkg does), ``installed`` (new only), ``removed`` (old only)."""

    kind: str
    package: str
    old: str | None
    new: str | None

    def line(self) -> str:
        if self.kind in ("upgraded", "downgraded"):
            return f"{self.kind} {self.package} {self.old} -> {self.new}"
        return f"{self.kind} {self.package} {self.new if self.kind == 'installed' else self.old}"


_ACTIONS = {"upgraded": "upgrade", "downgraded": "downgrade", "installed": "install",
            "removed": "remove"}


def importance(changes: Sequence[Change]) -> str:
    """Why the BE of an upgrade with these changes is important (as the apt hook decides
    for its snapshots: a kernel installed or upgraded, a pve-manager major upgrade)."""
    return aptinfo.importance(
        aptinfo.Change(c.package, c.old or "", c.new or "", _ACTIONS.get(c.kind, c.kind))
        for c in changes)


def parse_packages(text: str) -> dict[str, str]:
    """``dpkg-query -W`` output (package, version, status) -> {package: version} of the
    packages that are installed (status ``ii``, ``iU``, ...: not ``rc``, not ``un``)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0]:
            continue
        status = parts[2].strip() if len(parts) > 2 else "ii"
        if len(status) >= 2 and status[1] in "nc":  # not installed / config files only
            continue
        out[parts[0]] = parts[1]
    return out


def diff(before: dict[str, str], after: dict[str, str]) -> tuple[Change, ...]:
    """What changed between two package lists, sorted by package name."""
    changes: list[Change] = []
    for pkg in sorted(before.keys() | after.keys()):
        old, new = before.get(pkg), after.get(pkg)
        if old == new:
            continue
        kind = ("installed" if old is None else "removed" if new is None
                else "downgraded" if debversion.compare(new, old) < 0 else "upgraded")
        changes.append(Change(kind, pkg, old, new))
    return tuple(changes)


class Namespace(Protocol):
    def enter(self) -> None: ...

    def leave(self) -> None: ...


NamespaceFactory = Callable[[Runner], Namespace]


def _default_namespace(runner: Runner) -> Namespace:
    from beadm.esp.host import PrivateNamespace  # the one implementation (ctypes)

    return PrivateNamespace(runner)


class Chroot:
    """The clone mounted for a chroot (see the module doc); a context manager.

    ``plan``: (dataset, path relative to the BE root), parents first (``becommon._mount_plan``).
    In a dry run nothing is entered, made or mounted: every step is printed."""

    def __init__(self, runner: Runner, plan: Sequence[tuple[str, str]], *,
                 tmp_base: str = "/run", namespace: NamespaceFactory = _default_namespace,
                 out: TextIO | None = None) -> None:
        self._runner = runner
        self._plan = list(plan)
        self._tmp_base = tmp_base
        self._namespace = namespace
        self._out = out if out is not None else sys.stdout
        self.root = Path(tmp_base) / "beadm-upgrade-XXXXXXXX"

    def run(self, argv: Sequence[str], *, check: bool = True,
            on_line: LineSink | None = None) -> Result:
        """Run ``argv`` chrooted into the clone (never readonly: the clone is changed, and
        a dry run has no clone to look into); ``on_line``: its output as it comes."""
        return self._runner.run(["chroot", str(self.root), *argv], check=check,
                                on_line=on_line)

    @contextlib.contextmanager
    def mounted(self) -> Iterator[Chroot]:
        dry = self._runner.dry_run
        ns: Namespace | None = None
        base: Path | None = None
        mounted: list[Path] = []
        written: Path | None = None
        try:
            if not dry:
                ns = self._namespace(self._runner)
                ns.enter()
                base = Path(tempfile.mkdtemp(prefix="beadm-upgrade-", dir=self._tmp_base))
                self.root = base / "root"
                self.root.mkdir(mode=0o700)

            def mount(argv: list[str], target: Path) -> None:
                self._runner.run([*argv, str(target)])
                mounted.append(target)

            def inside(rel: str) -> Path:
                """A mount point in the clone: mount(8) follows links, so none may be on
                the way (beadm.confined: a link out of the clone is refused)."""
                if dry:
                    return Path(str(self.root) + "/" + rel.lstrip("/"))
                return confined.mount_point(self.root, rel, create=True)

            for dataset, rel in self._plan:
                target = inside(rel) if rel else self.root
                mount(mount_argv(dataset), target)
            mount(["mount", "-t", "proc", "proc"], inside("proc"))
            mount(["mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs"],
                  inside("sys"))
            mount(["mount", "--rbind", "/dev"], inside("dev"))
            mount(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs"],
                  inside("run"))
            empty = (base / "empty") if base is not None else Path(self._tmp_base) / "empty"
            if not dry:
                empty.write_bytes(b"")
                empty.chmod(0o644)
            for esp_list in ESP_LISTS:  # a dry run shows the usual one
                if dry and esp_list == ESP_LISTS[0]:
                    mount(["mount", "--bind", str(empty)], self.root / esp_list)
                elif not dry and (found := confined.regular(self.root, str(esp_list))):
                    # where the clone itself finds it (beadm.confined), never outside it
                    mount(["mount", "--bind", str(empty)], found)
            written = self._policy(base, mount)
            yield self
        finally:
            if written is not None:
                with contextlib.suppress(OSError):
                    confined.unlink(self.root, str(POLICY_RC_D))
            for target in reversed(mounted):
                r = self._runner.run(["umount", "-R", str(target)], check=False)
                if r.returncode != 0 and not dry:
                    self._runner.run(["umount", "-R", "-l", str(target)], check=False)
            if base is not None:
                for d in [base / "empty", base / "policy-rc.d"]:
                    with contextlib.suppress(OSError):
                        d.unlink()
                for d in [self.root, base]:  # rmdir only: never recurse into a mount point
                    with contextlib.suppress(OSError):
                        d.rmdir()
            if ns is not None:
                ns.leave()

    def _policy(self, base: Path | None,
                mount: Callable[[list[str], Path], None]) -> Path | None:
        """policy-rc.d exits 101 in the clone: bound over an existing one, else written
        (returned: removed afterwards)."""
        target = self.root / POLICY_RC_D
        if base is None:  # dry run
            print(f"would make {target} exit 101 (no daemon starts; what was there comes "
                  "back afterwards)", file=self._out)
            return None
        ours = base / "policy-rc.d"
        ours.write_text(POLICY_TEXT, encoding="utf-8")
        ours.chmod(0o755)
        # inside the clone only (beadm.confined): a file there is covered where the clone
        # itself finds it, never outside it; a new one is written with no link on the way
        real = confined.resolve(self.root, str(POLICY_RC_D))
        if real is not None and confined.is_file(self.root, str(POLICY_RC_D)):
            mount(["mount", "--bind", str(ours)], real)
            return None
        confined.write_file(self.root, str(POLICY_RC_D), POLICY_TEXT.encode("utf-8"),
                            mode=0o755, fsync=False)
        return target


def packages(chroot: Chroot) -> dict[str, str]:
    return parse_packages(chroot.run(list(DPKG_QUERY)).stdout)


def apt_argv(apt_args: Sequence[str]) -> list[str]:
    return [*APT_ENV, "apt-get", *APT_OPTS, *apt_args]
