"""Issue 23.4 on real ZFS and FAT: links in a BE that is not running are never followed onto
the host. BE ``b`` has ``etc/kernel -> /etc/kernel`` (the host's cmdline would be rewritten to
boot ``b``), BE ``c`` only ``boot/vmlinuz-X -> /etc/shadow`` (the host's secrets would be
copied onto every ESP). The VM's root is a throw-away snapshot: its /etc/kernel/cmdline is
set here to a known line."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from labpool import lab_sdboot_backend

from beadm.backend import BeRef
from beadm.errors import BootError
from beadm.sdboot.backend import SystemdBootBackend

POOL = "cnftest"
KVER = "6.1.0-99-test"
EVIL = "6.1.0-666-evil"
HOST_CMDLINE = Path("/etc/kernel/cmdline")
HOST_LINE = "root=ZFS=hostpool/ROOT/host boot=zfs host-only-option\n"


@pytest.fixture
def machine(pool_disks: list[Path], esps: list[tuple[Path, str]], sh: Callable[..., str],
            tmp_path: Path) -> Iterator[tuple[SystemdBootBackend, list[str]]]:
    HOST_CMDLINE.parent.mkdir(exist_ok=True)
    HOST_CMDLINE.write_text(HOST_LINE)
    alt = tmp_path / "alt"
    sh("zpool", "create", "-f", "-R", str(alt), "-O", "mountpoint=none", POOL,
       str(pool_disks[0]))
    try:
        sh("zfs", "create", "-o", "canmount=off", f"{POOL}/ROOT")
        for name in ("a", "b", "c"):
            sh("zfs", "create", "-o", "mountpoint=/", "-o", "canmount=noauto",
               f"{POOL}/ROOT/{name}")
            sh("zfs", "mount", f"{POOL}/ROOT/{name}")
            (alt / "boot").mkdir()
            (alt / "etc").mkdir()
            if name == "b":
                (alt / "etc/kernel").symlink_to("/etc/kernel")
            else:
                (alt / "etc/kernel").mkdir()
                (alt / "etc/kernel/cmdline").write_text(
                    f"root=ZFS={POOL}/ROOT/{name} boot=zfs quiet\n")
            if name == "c":
                (alt / f"boot/vmlinuz-{EVIL}").symlink_to("/etc/shadow")
                (alt / f"boot/initrd.img-{EVIL}").write_bytes(b"I" * (1 << 20))
            else:
                (alt / f"boot/vmlinuz-{KVER}").write_bytes(b"K" * (2 << 20))
                (alt / f"boot/initrd.img-{KVER}").write_bytes(b"I" * (3 << 20))
            sh("zfs", "umount", f"{POOL}/ROOT/{name}")
        uuids = [u for _, u in esps]
        yield lab_sdboot_backend(tmp_path, uuids), uuids
    finally:
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)


def esp_sums(uuid: str, sh: Callable[..., str]) -> str:
    script = (f"mkdir -p /run/cnft && mount -o ro /dev/disk/by-uuid/{uuid} /run/cnft && "
              "cd /run/cnft && find . -type f -exec sha256sum {} +")
    return sh("unshare", "--mount", "--propagation", "private", "sh", "-c", script)


def test_hostile_links_in_a_be_stay_inside_it(
        machine: tuple[SystemdBootBackend, list[str]], sh: Callable[..., str]) -> None:
    backend, uuids = machine
    a, b, c = (BeRef(n, f"{POOL}/ROOT/{n}") for n in ("a", "b", "c"))
    shadow = hashlib.sha256(Path("/etc/shadow").read_bytes()).hexdigest()
    backend.init(a)

    with pytest.raises(BootError) as exc:
        backend.sync([a, b, c])
    msg = exc.value.message
    assert "\n" not in msg
    assert "BE b:" in msg and "BE c has no kernel with an initrd" in msg
    assert HOST_CMDLINE.read_text() == HOST_LINE

    for be, why in ((b, "BE b:"), (c, "BE c has no kernel")):
        with pytest.raises(BootError, match=why) as exc:
            backend.activate(be, temporary=False)
        assert "\n" not in exc.value.message
        with pytest.raises(BootError, match=why):
            backend.post_create(be)
    assert HOST_CMDLINE.read_text() == HOST_LINE

    for u in uuids:
        sums = esp_sums(u, sh)
        assert shadow not in sums
        assert f"beadm-a-{KVER}.conf" in sums  # the good BE was synced
        assert "beadm-b-" not in sums and "beadm-c-" not in sums
    assert f"{POOL}/ROOT" not in Path("/proc/self/mountinfo").read_text()
