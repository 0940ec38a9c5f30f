"""The Debian package: built with packaging/build-deb, installed, used and removed
in the Proxmox-like lab machine (lab/pvelab), leaving nothing behind.

Host side: build the .deb once per session and check its contents (dpkg -c), control
fields, the shebang of every script it installs, and Debian 12's lintian (``-I --pedantic``,
as packaging/build-deb runs it; tests/boot/test_trixie.py runs Debian 13's on the same .deb).
Machine side: `apt install ./beadm_*.deb` (dpkg -i when apt cannot do without the network),
`beadm list`, the installed files, `apt remove`, then purge, and a check that no file of the
package is left.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from debbuild import (
    LINTIAN_ARGV,
    ONLY_ON_12,
    REPO,
    UNITS,
    build,
    deb_version,
    expected_first_lines,
    first_lines,
    lintian_tags,
)

pytestmark = pytest.mark.boot


@pytest.fixture(scope="module")
def built() -> Iterator[tuple[Path, str]]:
    """(beadm_<version>_all.deb built out of tree into a temporary directory, build log)."""
    out = Path(tempfile.mkdtemp(prefix="beadm-deb-test-"))
    try:
        yield build(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def deb(built: tuple[Path, str]) -> Path:
    return built[0]


def overrides() -> dict[str, str]:
    """debian/beadm.lintian-overrides: tag -> the comment above it (its reason)."""
    reasons: dict[str, str] = {}
    comment: list[str] = []
    text = (REPO / "debian" / "beadm.lintian-overrides").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("#"):
            comment.append(line.lstrip("# "))
        elif line.strip():
            tag = line.removeprefix("beadm:").split()[0]  # [beadm:] tag [pointer]
            reasons[tag] = " ".join(comment).strip()
            comment = []
    return reasons


def _contents(deb: Path) -> dict[str, str]:
    """path (without leading ./) -> mode string, from dpkg -c."""
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    files: dict[str, str] = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)
        files[fields[5].removeprefix("./").split(" -> ")[0].rstrip("/")] = fields[0]
    return files


def test_deb_contents(deb: Path) -> None:
    files = _contents(deb)
    assert files["usr/sbin/beadm"].startswith("-rwxr-xr-x")
    assert "usr/bin/beadm" not in files
    assert "usr/lib/python3/dist-packages/beadm/cli/__init__.py" in files
    assert "usr/lib/python3/dist-packages/beadm/__init__.py" in files
    assert "usr/share/man/man8/beadm.8.gz" in files
    assert "usr/share/bash-completion/completions/beadm" in files
    assert "usr/share/doc/beadm/copyright" in files
    for hook in (
        "etc/kernel/postinst.d/zzz-beadm",
        "etc/kernel/postrm.d/zzz-beadm",
        "etc/initramfs/post-update.d/zzz-beadm",
    ):
        assert files[hook].startswith("-rwxr-xr-x"), hook
    # the re-asserts where no kernel hook runs: apt's DPkg::Post-Invoke and the shutdown unit
    assert files["etc/apt/apt.conf.d/99beadm"].startswith("-rw-r--r--")
    assert files["usr/lib/systemd/system-generators/beadm-trial-generator"].startswith(
        "-rwxr-xr-x")
    # the units under /usr/lib whichever release builds (Debian 12's debhelper puts them under
    # /lib, which Debian 13's lintian calls aliased-location): one .deb for both releases
    for unit in UNITS:
        assert files[f"usr/lib/systemd/system/{unit}"].startswith("-rw-r--r--"), unit
    # nothing under the aliased /lib, /bin, /sbin of merged /usr
    aliased = [f for f in files if f.split("/")[0] in ("lib", "bin", "sbin", "lib64")]
    assert not aliased, aliased
    # the deliberate lintian tags, each overridden with its reason
    assert files["usr/share/lintian/overrides/beadm"].startswith("-rw-r--r--")
    # hooks sort after Proxmox's (run-parts, C collation)
    assert "zzz-beadm" > "zz-proxmox-boot" and "zzz-beadm" > "proxmox-boot-sync"
    # nothing from the build or the test suite
    junk = [
        f
        for f in files
        if "__pycache__" in f or f.endswith(".pyc") or "/tests/" in f or ".egg-info" in f
    ]
    assert not junk, junk
    # every module of the source tree is shipped
    src = REPO / "src" / "beadm"
    for py in src.rglob("*.py"):
        rel = py.relative_to(src.parent).as_posix()
        assert f"usr/lib/python3/dist-packages/{rel}" in files, rel


def test_deb_scripts_keep_their_shebangs(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    assert expected_first_lines()["usr/sbin/beadm"] == "#!/usr/bin/python3 -IS"
    assert first_lines(tmp_path) == expected_first_lines()


def test_build_deb_runs_lintian_with_info_and_pedantic_tags(deb: Path) -> None:
    calls = [c.split("\0")[:-1] for c in
             (deb.parent / LINTIAN_ARGV).read_text().splitlines() if c]
    assert len(calls) == 1, calls
    argv = calls[0]
    assert "-I" in argv and "--pedantic" in argv, argv
    assert "--info" not in argv, argv  # --info explains tags; -I shows the I: ones
    assert argv[-1].endswith(".changes"), argv


def test_lintian_overrides_each_have_a_reason() -> None:
    reasons = overrides()
    assert reasons, "no override in debian/beadm.lintian-overrides"
    for tag, reason in reasons.items():
        assert len(reason.split()) >= 5, f"override {tag} has no reason comment: {reason!r}"


def test_deb_is_lintian_clean_with_debian_12s_lintian(built: tuple[Path, str]) -> None:
    deb, log = built
    # build-deb's own run (on the .changes) and one on the .deb, as build-deb runs it
    assert "lintian reports errors" not in log
    tags_in_build = lintian_tags(log.split("build-deb: lintian", 1)[-1])
    assert sorted(tags_in_build) == sorted(ONLY_ON_12), tags_in_build
    out = subprocess.run(["lintian", "-I", "--pedantic", str(deb)], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(lintian_tags(out.stdout)) == sorted(ONLY_ON_12), out.stdout + out.stderr
    version = subprocess.run(["lintian", "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert "v2.116." in version, version  # Debian 12's


def test_deb_metadata(deb: Path, tmp_path: Path) -> None:
    """The Python metadata in the .deb: licence, classifiers, URLs and keywords."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    [meta] = (tmp_path / "usr/lib/python3/dist-packages").glob("beadm-*.dist-info/METADATA")
    text = meta.read_text(encoding="utf-8")
    head = text.split("\n\n", 1)[0]
    # setuptools >= 77 writes the SPDX expression, Debian 12's 66 the licence text field
    assert re.search(r"^(License-Expression|License): BSD-2-Clause$", head, re.M), head
    assert "Classifier: Environment :: Console" in head, head
    assert "Classifier: Operating System :: POSIX :: Linux" in head, head
    assert not re.search(r"^Classifier: License ::", head, re.M), head  # deprecated with SPDX
    assert re.search(r"^Keywords: .*zfs", head, re.M | re.I), head
    assert re.search(r"^Project-URL: ", head, re.M), head


def test_deb_control(deb: Path) -> None:
    def field(name: str) -> str:
        return subprocess.run(
            ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
        ).stdout.strip()

    assert field("Package") == "beadm"
    assert field("Version") == deb_version()
    assert field("Architecture") == "all"
    description = field("Description")
    for word in ("systemd-boot", "GRUB", "Secure Boot", "Proxmox VE", "ZFS"):
        assert word in description, (word, description)
    depends = {d.strip().split(" ")[0] for d in field("Depends").split(",")}
    assert depends == {"python3", "python3:any", "zfsutils-linux", "dosfstools", "util-linux"}
    conffiles = subprocess.run(
        ["dpkg-deb", "--info", str(deb), "conffiles"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(conffiles) == [
        "/etc/apt/apt.conf.d/99beadm",
        "/etc/initramfs/post-update.d/zzz-beadm",
        "/etc/kernel/postinst.d/zzz-beadm",
        "/etc/kernel/postrm.d/zzz-beadm",
    ]


# What runs inside the machine, as root, as one pvelab step; the .deb travels inside
# it (base64), so nothing is written into the checkout. Each check prints
# "FAIL: ..." and exits non-zero; the last line on success is "DEB-TEST-OK".
IN_MACHINE = r"""
set -u
# The lab puts the checkout's beadm first on PATH and on PYTHONPATH: test the package's.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH
deb=/tmp/@DEB@
base64 -d > "$deb" <<'DEB-BASE64'
@BASE64@
DEB-BASE64
fail() { echo "FAIL: $*"; exit 1; }
step() { echo "--- $*"; }
export DEBIAN_FRONTEND=noninteractive

step "install $deb"
# the machine has no network: apt needs none when the dependencies are installed
if ! apt-get install -q -y --no-install-recommends "$deb"; then
    echo "apt-get could not install it; using dpkg -i"
    dpkg -i "$deb" || fail "dpkg -i failed"
fi
[ "$(dpkg-query -W -f='${db:Status-Status}' beadm)" = installed ] || fail "beadm not installed"
dpkg -L beadm | sort > /tmp/beadm-files

step "installed files"
[ -x /usr/sbin/beadm ] || fail "/usr/sbin/beadm missing"
[ ! -e /usr/bin/beadm ] || fail "/usr/bin/beadm exists"
[ "$(command -v beadm)" = /usr/sbin/beadm ] || fail "beadm is not /usr/sbin/beadm"
[ -f /usr/lib/python3/dist-packages/beadm/cli/__init__.py ] || fail "beadm not in dist-packages"
py=$(python3 -c 'import beadm; print(beadm.__file__)')
[ "$py" = /usr/lib/python3/dist-packages/beadm/__init__.py ] || fail "python3 imports $py"
[ -f /usr/share/man/man8/beadm.8.gz ] || fail "man page missing"
page=$(zcat /usr/share/man/man8/beadm.8.gz)
grep -q '^\.SH EXIT STATUS' <<<"$page" || fail "man page incomplete"
if command -v man >/dev/null; then
    [[ "$(man -w beadm)" == */beadm.8* ]] || fail "man -w beadm does not find the page"
fi
comp=/usr/share/bash-completion/completions/beadm
[ -f $comp ] || fail "bash completion missing"
registered=$(bash -c "source $comp && complete -p beadm")
[[ $registered == *_beadm* ]] || fail "completion not registered"
for h in /etc/kernel/postinst.d/zzz-beadm /etc/kernel/postrm.d/zzz-beadm \
         /etc/initramfs/post-update.d/zzz-beadm; do
    [ -x "$h" ] || fail "hook $h missing or not executable"
done

[ -f /etc/apt/apt.conf.d/99beadm ] || fail "apt hook missing"
apt-config dump | grep -q 'DPkg::Post-Invoke::.*beadm sync --if-used' || fail "apt hook not read"
systemctl is-enabled beadm-reassert.service || fail "beadm-reassert.service not enabled"
systemctl is-active beadm-reassert.service || fail "beadm-reassert.service not started"
systemctl is-enabled beadm-trial.service || fail "beadm-trial.service not enabled"
systemctl is-enabled beadm-trial-watchdog.service || fail "beadm-trial-watchdog.service not enabled"

step "the packaged hooks change no ESP before beadm init"
/etc/kernel/postinst.d/zzz-beadm "$(uname -r)" "/boot/vmlinuz-$(uname -r)" || fail "postinst hook"
/etc/initramfs/post-update.d/zzz-beadm "$(uname -r)" "/boot/initrd.img-$(uname -r)" \
    || fail "post-update hook"
for uuid in $(cat /etc/kernel/proxmox-boot-uuids); do
    # ls exits 2 when nothing matches: that is the expected case here
    found=$(unshare --mount --propagation private sh -c '
        mkdir -p /run/deb-esp
        mount -o ro "/dev/disk/by-uuid/$1" /run/deb-esp || exit 3
        ls -d /run/deb-esp/beadm /run/deb-esp/loader/entries/beadm-* 2>/dev/null || true' \
        sh "$uuid") || fail "could not mount ESP $uuid"
    [ -z "$found" ] || fail "a hook wrote to ESP $uuid before init: $found"
done

step "beadm version"
beadm version || fail "beadm version"
# the package's own command (debian/sbin/beadm), not the console-script wrapper, which
# imports re; version imports no command-line machinery (issue 15)
first=$(head -1 /usr/sbin/beadm)
[ "$first" = "#!/usr/bin/python3 -IS" ] || fail "/usr/sbin/beadm starts with $first"
mods=$(python3 -X importtime /usr/sbin/beadm version 2>&1 >/dev/null |
       awk -F'|' 'NR > 1 {gsub(/ /, "", $3); print $3}')
grep -qx beadm.__main__ <<<"$mods" || fail "importtime shows no beadm.__main__: $mods"
! grep -qx -e re -e beadm.cli -e argparse <<<"$mods" || fail "beadm version imports: $mods"
step "beadm list"
beadm list || fail "beadm list failed"
bes=$(beadm list -H | cut -f1) || fail "beadm list -H"
running=$(findmnt -n -o SOURCE /)
grep -qxF "${running##*/}" <<<"$bes" || fail "beadm list -H lacks the running BE ${running##*/}"
step "beadm --help"
beadm --help >/dev/null || fail "beadm --help"

step "apt remove"
apt-get remove -q -y beadm || dpkg -r beadm || fail "remove failed"
[ ! -e /usr/sbin/beadm ] || fail "/usr/sbin/beadm left after remove"
[ ! -e /usr/lib/python3/dist-packages/beadm ] || fail "dist-packages/beadm left after remove"
# the hooks are conffiles: kept until purge, and must do nothing without beadm
for h in /etc/kernel/postinst.d/zzz-beadm /etc/initramfs/post-update.d/zzz-beadm; do
    if [ -e "$h" ]; then
        "$h" "$(uname -r)" || fail "$h fails once beadm is removed"
    fi
done

step "purge"
apt-get purge -q -y beadm || dpkg -P beadm || fail "purge failed"
status=$(dpkg-query -W -f='${db:Status-Status}' beadm 2>/dev/null || true)
case $status in ""|not-installed) ;; *) fail "dpkg still has beadm as $status" ;; esac
left=""
while IFS= read -r f; do   # every file (not folder, nor /lib -> usr/lib) the package had
    if [ -n "$f" ] && [ ! -d "$f" ] && { [ -f "$f" ] || [ -L "$f" ]; }; then left="$left $f"; fi
done < /tmp/beadm-files
for f in /usr/lib/python3/dist-packages/beadm /usr/share/doc/beadm /run/beadm.lock \
         /etc/kernel/postinst.d/zzz-beadm /etc/initramfs/post-update.d/zzz-beadm \
         /etc/apt/apt.conf.d/99beadm /usr/lib/systemd/system/beadm-reassert.service \
         /etc/systemd/system/multi-user.target.wants/beadm-reassert.service \
         /usr/lib/systemd/system/beadm-trial.service \
         /etc/systemd/system/multi-user.target.wants/beadm-trial.service \
         /usr/lib/systemd/system/beadm-trial-watchdog.service \
         /etc/systemd/system/sysinit.target.wants/beadm-trial-watchdog.service \
         /usr/lib/systemd/system-generators/beadm-trial-generator; do
    [ ! -e "$f" ] || left="$left $f"
done
if compgen -G '/var/lib/dpkg/info/beadm.*' >/dev/null; then
    left="$left /var/lib/dpkg/info/beadm.*"
fi
[ -z "$left" ] || fail "left after purge:$left"
echo DEB-TEST-OK
"""


def test_deb_installs_runs_and_removes_cleanly_in_the_proxmox_like_machine(deb: Path) -> None:
    from pvelab import run_steps  # tests/boot/pvelab.py

    payload = base64.encodebytes(deb.read_bytes()).decode("ascii").rstrip("\n")
    step = IN_MACHINE.replace("@DEB@", deb.name).replace("@BASE64@", payload)
    result = run_steps(step)
    assert result.returncode == 0, f"in the machine:\n{result.output[-8000:]}"
    assert "DEB-TEST-OK" in result.steps.get(1, ""), result.output[-8000:]
