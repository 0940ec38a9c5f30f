"""A fresh pool on a blank lab disk, for lab tests (imported as ``from labpool import ...``)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def create_pool(name: str, altroot: str, disk: Path) -> None:
    """``zpool create -R altroot -O mountpoint=none name disk``, after destroying any pool of
    that name; up to three attempts (whole-disk ``zpool create`` races udev now and then)."""
    subprocess.run(["zpool", "destroy", "-f", name], capture_output=True, check=False)
    create = ["zpool", "create", "-f", "-R", altroot, "-O", "mountpoint=none", name, str(disk)]
    for attempt in range(3):
        subprocess.run(["udevadm", "settle"], check=True)
        res = subprocess.run(create, capture_output=True, text=True)
        if res.returncode == 0:
            return
        print(f"zpool create, attempt {attempt + 1}: {res.stderr.strip()}")
        time.sleep(2)
    raise AssertionError(f"zpool create failed: {res.stderr}")
