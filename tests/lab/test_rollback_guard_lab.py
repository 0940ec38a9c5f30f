"""activate's cluster guard and network drift warning on real OpenZFS and FAT32 ESPs (lab
VM): the real CLI refuses a BE older than the cluster join (exit 5, one line per reason,
bootfs, ESPs and EFI variables unchanged, the BE not left mounted), -n refuses the same,
--force activates with a warning, list --json carries the reason, and with /etc/corosync
in a shared dataset (init --shared-state) the BE's stale shadowed copy does not count.

``/`` of the lab VM is not ZFS: BE ``a`` stands for the running BE. It is mounted at the
pool's altroot (``running_root``), and the mount table beadm reads is the VM's own plus a
line putting ``a`` at ``/`` (and, for the shared case, ``<pool>/etc-corosync`` at
``/etc/corosync``, where it really is under the altroot).
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from labpool import create_pool, device_digest

from beadm.backend import BeRef
from beadm.cli import Deps, main
from beadm.esp.efivars import DEFAULT, EFIVARS, ONESHOT
from beadm.esp.host import SystemHost
from beadm.runner import Runner, SubprocessRunner
from beadm.sdboot.backend import SystemdBootBackend

POOL = "guardtest"
ROOT = f"{POOL}/ROOT"
KVER = "6.1.0-98-guard"
CONF = """totem {
  cluster_name: prod
  config_version: 4
  interface {
    linknumber: 0
  }
}
nodelist {
  node {
    name: pve1
    nodeid: 1
    ring0_addr: 10.0.0.1
  }
  node {
    name: pve2
    nodeid: 2
    ring0_addr: 10.0.0.2
  }
}
"""
JOIN = ("beadm: BE b predates the cluster join: it has no /etc/corosync/corosync.conf and "
        "would boot standalone, out of cluster prod")


@dataclass
class Lab:
    alt: Path
    etc_kernel: Path
    efivars: Path
    uuids: list[str]
    mountinfo: Path
    extra: str = ""  # mount table lines after the VM's own

    def backend(self, runner: Runner, out: io.StringIO | None = None) -> SystemdBootBackend:
        host = SystemHost(runner, etc_kernel=self.etc_kernel, efivars=self.efivars,
                          running_root=self.alt, out=out)
        return SystemdBootBackend(runner, host=host, out=out)

    def cli(self, *argv: str) -> tuple[int, str, str]:
        own = Path("/proc/self/mountinfo").read_text()
        self.mountinfo.write_text(
            own + f"9990 1 0:999 / / rw - zfs {ROOT}/a rw\n" + self.extra)
        out, err = io.StringIO(), io.StringIO()
        deps = Deps(make_runner=lambda dry, o: SubprocessRunner(dry_run=dry, out=o),
                    make_backend=lambda name, r: self.backend(r, out),
                    mountinfo=self.mountinfo, running_root=self.alt,
                    lock_path=Path("/run/guardtest.lock"), stdin=io.StringIO(),
                    stdout=out, stderr=err)
        rc = main(["--root", ROOT, "--backend", "systemd-boot", *argv], deps=deps)
        return rc, out.getvalue(), err.getvalue()


def sh(*argv: str) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr}")
    return res.stdout


@pytest.fixture
def lab(pool_disks: list[Path], esps: list[tuple[Path, str]],
        tmp_path: Path) -> Iterator[Lab]:
    alt = tmp_path / "alt"
    create_pool(POOL, str(alt), pool_disks[0])
    etc = tmp_path / "etc-kernel"
    etc.mkdir()
    uuids = [u for _, u in esps]
    (etc / "proxmox-boot-uuids").write_text("\n".join(uuids) + "\n")
    efi = EFIVARS if EFIVARS.is_dir() else tmp_path / "efivars"
    efi.mkdir(exist_ok=True)
    lab = Lab(alt, etc, efi, uuids, tmp_path / "mountinfo")
    backend = lab.backend(SubprocessRunner())
    try:
        sh("zfs", "create", "-o", "canmount=off", ROOT)
        sh("zfs", "create", "-o", "mountpoint=/", "-o", "canmount=noauto", f"{ROOT}/a")
        sh("zfs", "mount", f"{ROOT}/a")
        files = {
            f"boot/vmlinuz-{KVER}": "K" * (1 << 20),
            f"boot/initrd.img-{KVER}": "I" * (2 << 20),
            "etc/kernel/cmdline": f"root=ZFS={ROOT}/a boot=zfs quiet\n",
            "etc/hostname": "pve1\n",
            "etc/hosts": "127.0.0.1 localhost\n10.0.0.1 pve1.lab pve1\n",
            "etc/network/interfaces": "auto vmbr0\niface vmbr0 inet static\n"
                                      "\taddress 10.0.0.1/24\n",
        }
        for rel, text in files.items():
            (alt / rel).parent.mkdir(parents=True, exist_ok=True)
            (alt / rel).write_text(text)
        # b: a clone from before the cluster join, with another address
        sh("zfs", "umount", f"{ROOT}/a")
        sh("zfs", "snapshot", f"{ROOT}/a@before-join")
        sh("zfs", "clone", "-o", "mountpoint=/", "-o", "canmount=noauto",
           f"{ROOT}/a@before-join", f"{ROOT}/b")
        sh("sh", "-c", f"d=$(mktemp -d); mount -t zfs -o zfsutil {ROOT}/b $d; "
           f"sed -i 's/10.0.0.1/10.0.0.7/' $d/etc/hosts; umount $d; rmdir $d")
        sh("zfs", "mount", f"{ROOT}/a")  # the running BE
        (alt / "etc/corosync").mkdir()
        (alt / "etc/corosync/corosync.conf").write_text(CONF)  # a joined the cluster
        backend.init(BeRef("a", f"{ROOT}/a", running=True))
        backend.post_create(BeRef("b", f"{ROOT}/b"))
        backend.activate(BeRef("a", f"{ROOT}/a", running=True), temporary=False)
        sh("zpool", "set", f"bootfs={ROOT}/a", POOL)  # (what beadm's activate also sets)
        yield lab
    finally:
        try:  # the ESPs are shared by the VM's lab tests: take beadm's files away
            for name in ("a", "b"):
                backend.post_destroy(BeRef(name, f"{ROOT}/{name}"))
            for var in (DEFAULT, ONESHOT):
                if backend.host.efivars.get(var) is not None:
                    backend.host.efivars.delete(var)
        finally:
            subprocess.run(["zpool", "destroy", "-f", POOL], check=False)


def state(lab: Lab) -> tuple[str, list[str], list[str | None]]:
    """bootfs and every dataset property beadm may set, every ESP byte, the EFI variables."""
    ds = sh("zfs", "list", "-H", "-p", "-r", "-o", "name,canmount,org.beadm:next", POOL)
    bootfs = sh("zpool", "get", "-H", "-o", "value", "bootfs", POOL)
    esps = [device_digest(Path(f"/dev/disk/by-uuid/{u}"))
            for u in lab.uuids]
    efi = SystemHost(SubprocessRunner(), etc_kernel=lab.etc_kernel, efivars=lab.efivars).efivars
    return ds + bootfs, esps, [efi.get(v) for v in (DEFAULT, ONESHOT)]


def b_not_mounted() -> None:
    assert f" {ROOT}/b " not in Path("/proc/self/mountinfo").read_text()


def test_cluster_guard_and_drift_on_real_zfs(lab: Lab) -> None:
    before = state(lab)
    assert before[0].strip().endswith(f"{ROOT}/a")
    # refused: one error line, nothing changed, nothing left mounted
    for dry in ([], ["-n"]):
        rc, out, err = lab.cli(*dry, "activate", "b")
        assert rc == 5, out + err
        lines = err.splitlines()
        assert lines[-1] == ("beadm: not activating b: booting it can break the Proxmox "
                             "cluster; activate --force does it anyway; "
                             + JOIN.removeprefix("beadm: "))  # one error line
        # the drift warning comes first, with its diff
        assert lines[0].startswith("beadm: warning: /etc/hosts of BE b differs from the "
                                   "running BE a")
        assert "-10.0.0.1 pve1.lab pve1" in lines and "+10.0.0.7 pve1.lab pve1" in lines
        assert "would run" not in out
        assert state(lab) == before
        b_not_mounted()
    # list --json carries it
    rc, out, err = lab.cli("list", "--json")
    assert rc == 0, err
    bes = {b["name"]: b for b in json.loads(out)["bes"]}
    assert bes["a"]["cluster_guard"] == [] and bes["a"]["network_drift"] == []
    assert bes["b"]["cluster_guard"] == [JOIN.removeprefix("beadm: ")]
    assert bes["b"]["network_drift"] == ["/etc/hosts"]
    b_not_mounted()
    # --force: activated, the reason is a warning
    rc, out, err = lab.cli("activate", "--force", "b")
    assert rc == 0, out + err
    assert f"beadm: warning: {JOIN.removeprefix('beadm: ')}" in err.splitlines()
    assert sh("zpool", "get", "-H", "-o", "value", "bootfs", POOL).strip() == f"{ROOT}/b"
    assert state(lab) != before
    rc, out, err = lab.cli("activate", "a")  # the running BE: nothing to compare
    assert (rc, err) == (0, ""), out
    b_not_mounted()


def test_shared_corosync_is_what_every_be_sees(lab: Lab) -> None:
    """init --shared-state: /etc/corosync is a dataset outside the BE root that b mounts
    too; b's own (empty) /etc/corosync under it is not what b would boot with."""
    conf = (lab.alt / "etc/corosync/corosync.conf").read_text()
    sh("zfs", "create", "-o", "mountpoint=/etc/corosync", f"{POOL}/etc-corosync")
    (lab.alt / "etc/corosync/corosync.conf").write_text(conf)
    lab.extra = f"9991 9990 0:998 / /etc/corosync rw - zfs {POOL}/etc-corosync rw\n"
    try:
        rc, out, err = lab.cli("activate", "b")
        assert rc == 0, out + err
        assert "cluster" not in err and "/etc/hosts of BE b differs" in err
        assert sh("zpool", "get", "-H", "-o", "value", "bootfs", POOL).strip() == f"{ROOT}/b"
        b_not_mounted()
    finally:
        sh("zfs", "umount", f"{POOL}/etc-corosync")
