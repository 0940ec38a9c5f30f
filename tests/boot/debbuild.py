"""Building beadm's .deb for the boot tier's package tests (test_deb.py on Debian 12,
test_trixie.py on Debian 13): build-deb with its lintian calls recorded, the scripts' first
lines, and lintian's tags as both releases show them. A helper module, not a test module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_DEB = REPO / "packaging" / "build-deb"
LINTIAN_ARGV = "lintian-argv"  # in the build's output directory: each lintian call of build-deb

# Every script the package installs -> the file in the checkout it is a copy of: its first line
# (the interpreter and its flags: -IS for the root tool) must reach the system unchanged,
# whatever the building release's dh_python3 does to shebangs (Debian 13's rewrites them).
SCRIPTS = {
    "usr/sbin/beadm": "debian/sbin/beadm",
    "etc/kernel/postinst.d/zzz-beadm": "hooks/zzz-beadm",
    "etc/kernel/postrm.d/zzz-beadm": "hooks/zzz-beadm",
    "etc/initramfs/post-update.d/zzz-beadm": "hooks/zzz-beadm",
    "usr/lib/systemd/system-generators/beadm-trial-generator": "hooks/beadm-trial-generator",
}


def deb_version() -> str:
    init = (REPO / "src" / "beadm" / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__ = "([^"]+)"$', init, re.M)
    assert m, "no __version__ line in src/beadm/__init__.py"
    return m.group(1)


def build(out: Path) -> tuple[Path, str]:
    """Run packaging/build-deb into ``out`` with a ``lintian`` first on PATH that records its
    argv in ``out/lintian-argv`` (one call a line, NUL-separated) and runs the real one;
    return the .deb and build-deb's standard error (the build log and lintian's output)."""
    shim = out / "shim"
    shim.mkdir()
    (shim / "lintian").write_text(
        '#!/bin/sh\nprintf \'%s\\0\' "$@" >> "$(dirname "$0")/../' + LINTIAN_ARGV + '"\n'
        'echo >> "$(dirname "$0")/../' + LINTIAN_ARGV + '"\nexec /usr/bin/lintian "$@"\n')
    (shim / "lintian").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    proc = subprocess.run(
        [str(BUILD_DEB), str(out)], capture_output=True, text=True, check=False, timeout=900,
        env=env)
    sys.stderr.write(proc.stderr[-4000:])
    assert proc.returncode == 0, f"build-deb failed:\n{proc.stderr[-4000:]}"
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.name == f"beadm_{deb_version()}_all.deb"
    assert path.is_file()
    return path, proc.stderr


def first_lines(root: Path) -> dict[str, str]:
    """The first line of each of SCRIPTS under ``root`` (an unpacked .deb or an installed
    system)."""
    return {
        path: (root / path).read_bytes().split(b"\n", 1)[0].decode() for path in SCRIPTS
    }


def expected_first_lines() -> dict[str, str]:
    return {
        path: (REPO / src).read_bytes().split(b"\n", 1)[0].decode()
        for path, src in SCRIPTS.items()
    }


# The tags one .deb cannot avoid on one release, with the lintian that shows them: Debian 12's
# flags every systemd service without an init.d script (the units only make sense under systemd,
# which every Proxmox VE host runs); Debian 13's lintian dropped that check and calls an override
# of a tag it does not know an error (alien-tag), so the tag is left, not overridden
# (debian/lintian-notes.md).
UNITS = ("beadm-reassert.service", "beadm-trial-watchdog.service", "beadm-trial.service")
ONLY_ON_12 = [
    f"I: beadm: package-supports-alternative-init-but-no-init.d-script "
    f"[usr/lib/systemd/system/{unit}]"
    for unit in UNITS
]


def unexpected_tags(output: str, release: str) -> list[str]:
    """The tags in lintian's ``output`` but those ONLY_ON_12 when ``release`` is "12"."""
    tags = lintian_tags(output)
    return [t for t in tags if release != "12" or t not in ONLY_ON_12]


def lintian_tags(output: str) -> list[str]:
    """lintian's tag lines (``X: package: tag ...``), without its complaint about root."""
    return [line for line in output.splitlines() if re.match(r"^[EWIPXCON]: ", line)]
