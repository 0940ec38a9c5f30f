"""Automatic snapshots and prune on real OpenZFS (lab VM), made by real apt runs.

apt-get installs, upgrades and removes tiny local packages with beadm's own
``DPkg::Pre-Install-Pkgs`` lines (from ``persist.APT_TEXT``, passed with ``apt-get -c``;
only ``beadm apt-hook`` gets ``--root``, since ``/`` in the VM is not ZFS), so the
snapshots are made by the hook command apt really runs, from apt's real version-3 input.
Then a BE is cloned from the oldest one, and ``prune`` (``-n``, then for real, then
again) must destroy exactly what the policy says and never touch what beadm did not make.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from labpool import create_pool

from beadm.cli import Deps, main
from beadm.sdboot import persist

POOL = "rpool"
ROOT = f"{POOL}/ROOT"
ALT = "/mnt/lab"
CONF = Path("/etc/beadm/beadm.conf")
KERNEL = "proxmox-kernel-9.9.9-1-pve-signed"  # an empty package with a kernel's name


def sh(*argv: str, stdin: str | None = None) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False, input=stdin)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr}")
    return res.stdout


def beadm(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(["--root", ROOT, "--backend", "none", *args],
              deps=Deps(stdin=io.StringIO(), stdout=out, stderr=err))
    return rc, out.getvalue(), err.getvalue()


def prop(ds: str, p: str) -> str:
    return sh("zfs", "get", "-H", "-p", "-o", "value", p, ds).strip()


def snaps() -> list[str]:
    """Snapshots of the BE root pve-1, oldest first (the names after @)."""
    out = sh("zfs", "list", "-H", "-p", "-t", "snapshot", "-o", "name", "-s", "createtxg",
             "-d", "1", f"{ROOT}/pve-1")
    return [line.partition("@")[2] for line in out.split()]


def everything() -> set[str]:
    return set(sh("zfs", "list", "-H", "-t", "all", "-o", "name", "-r", POOL).split())


def deb(tmp: Path, name: str, version: str) -> Path:
    d = tmp / f"{name}-{version}"
    (d / "DEBIAN").mkdir(parents=True)
    (d / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: beadm lab <lab@example.invalid>\nDescription: beadm lab package\n")
    out = tmp / f"{name}_{version}_all.deb"
    sh("dpkg-deb", "--build", "--root-owner-group", str(d), str(out))
    return out


@pytest.fixture
def pool(pool_disks: list[Path], tmp_path: Path) -> Iterator[Path]:
    """rpool/ROOT/pve-1 (with pve-1/var) booting next; beadm.conf with auto_snapshot on;
    an apt config file with beadm's hook lines. Yields that apt config file."""
    create_pool(POOL, ALT, pool_disks[0])
    conf = tmp_path / "apt.conf"
    lines = [ln for ln in persist.APT_TEXT.splitlines()
             if ln.startswith(("DPkg::Pre-Install-Pkgs", "DPkg::Tools::Options::BEADM_HOOK"))]
    assert len(lines) == 2, lines
    conf.write_text("\n".join(lines).replace(
        "beadm apt-hook", f"beadm --root {ROOT} --backend none apt-hook") + "\n")
    try:
        sh("zfs", "create", "-o", "canmount=off", "-o", "mountpoint=/rpool/ROOT", ROOT)
        sh("zfs", "create", "-o", "canmount=noauto", "-o", "mountpoint=/", f"{ROOT}/pve-1")
        sh("zfs", "create", "-o", "canmount=noauto", f"{ROOT}/pve-1/var")
        sh("zpool", "set", f"bootfs={ROOT}/pve-1", POOL)
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text("auto_snapshot = yes\nkeep = 10\npool_min_free = 1%\n")
        yield conf
    finally:
        CONF.unlink(missing_ok=True)
        for pkg in ("beadm-lab-a", KERNEL):
            subprocess.run(["dpkg", "--purge", pkg], capture_output=True, check=False)
        subprocess.run(["zpool", "destroy", "-f", POOL], check=False)


def apt(conf: Path, *args: str) -> str:
    return sh("apt-get", "-c", str(conf), "-y", "-q", "-o", "Dpkg::Use-Pty=0", *args)


def test_apt_hook_snapshots_then_prune_keeps_policy(pool: Path, tmp_path: Path) -> None:
    conf = pool
    # what beadm did not make: a snapshot of its own name, one named like an automatic one
    # (no mark), one whose mark is only inherited from the BE
    sh("zfs", "snapshot", "-r", f"{ROOT}/pve-1@mine")
    sh("zfs", "snapshot", "-r", f"{ROOT}/pve-1@beadm-auto-20000101-000000")

    # four apt runs: install, upgrade, a kernel, a removal
    a1, a2, k = deb(tmp_path, "beadm-lab-a", "1.0"), deb(tmp_path, "beadm-lab-a", "2.0"), \
        deb(tmp_path, KERNEL, "9.9.9-1")
    outputs = [apt(conf, "install", str(a1)), apt(conf, "install", str(a2)),
               apt(conf, "install", str(k)), apt(conf, "remove", "beadm-lab-a")]
    auto = [s for s in snaps() if s.startswith("beadm-auto-") and s != "beadm-auto-20000101-000000"]
    assert len(auto) == 4, (snaps(), outputs)
    for out, s in zip(outputs, auto, strict=True):
        assert f"beadm: automatic snapshot {ROOT}/pve-1@{s} taken" in out
    desc = [prop(f"{ROOT}/pve-1@{s}", "org.beadm:description") for s in auto]
    assert desc == ["apt: install 1 (beadm-lab-a)", "apt: upgrade 1 (beadm-lab-a)",
                    f"apt: install 1 ({KERNEL})", "apt: remove 1 (beadm-lab-a)"]
    assert [prop(f"{ROOT}/pve-1@{s}", "org.beadm:important") for s in auto] == \
        ["-", "-", "kernel", "-"]
    # recursive: the child's snapshot is there and marked too
    assert all(prop(f"{ROOT}/pve-1/var@{s}", "org.beadm:auto") == "apt" for s in auto)
    # list -s shows what each was for
    rc, listing, _ = beadm("list", "-s")
    assert rc == 0 and "apt: upgrade 1 (beadm-lab-a)" in listing

    # a BE cloned from the oldest automatic snapshot: that snapshot is held
    rc, _, err = beadm("create", "-e", f"pve-1@{auto[0]}", "pve-2")
    assert rc == 0, err
    CONF.write_text("auto_snapshot = yes\nkeep = 1\nkeep_important = 1\npool_min_free = 1%\n")
    before = everything()

    rc, out, err = beadm("prune", "-n", "-v")
    assert rc == 0, err
    assert everything() == before
    lines = out.splitlines()
    rows = {line.split()[0].partition("@")[2]: line for line in lines if line.startswith(ROOT)}
    assert "would destroy" in rows[auto[1]] and "older than the newest 1" in rows[auto[1]]
    assert "keep" in rows[auto[0]] and f"origin of {ROOT}/pve-2" in rows[auto[0]]
    assert "important (kernel)" in rows[auto[2]]
    assert "one of the newest 1" in rows[auto[3]]
    assert set(rows) == set(auto)  # nothing unmarked is even listed
    assert [ln for ln in lines if ln.startswith("would run")] == [
        f"would run: zfs destroy -r {ROOT}/pve-1@{auto[1]}"]

    rc, out, err = beadm("prune", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert [s["destroy"] for s in data["snapshots"]] == [False, False, True, False]
    gone = before - everything()
    assert gone == {f"{ROOT}/pve-1@{auto[1]}", f"{ROOT}/pve-1/var@{auto[1]}"}
    # untouched: ours that were kept, and everything beadm did not make
    for name in (f"{ROOT}/pve-1@mine", f"{ROOT}/pve-1/var@mine",
                 f"{ROOT}/pve-1@beadm-auto-20000101-000000", f"{ROOT}/pve-2"):
        assert name in everything()

    # idempotent: pruning again destroys nothing
    after = everything()
    rc, out, err = beadm("prune")
    assert (rc, out) == (0, ""), err
    assert everything() == after


def test_apt_hook_once_per_apt_run(pool: Path) -> None:
    """Two dpkg sessions of one apt run (unattended-upgrades): one snapshot; the second
    session's kernel makes it important. Both hook runs share the first non-shell
    ancestor (this pytest process), which is how apt's own sessions look to the hook."""
    first = "VERSION 3\n\nzsh 5.8 amd64 none < 5.9 amd64 none /x/zsh_5.9_amd64.deb\n"
    second = f"VERSION 3\n\n{KERNEL} - - none < 9.9 amd64 none /x/k.deb\n"
    hook = f"beadm --root {ROOT} --backend none apt-hook"
    out = sh("sh", "-c", f"{hook} <<'E'\n{first}E\n{hook} <<'E'\n{second}E\n")
    auto = [s for s in snaps() if s.startswith("beadm-auto-")]
    assert len(auto) == 1, (auto, out)
    assert "already taken in this apt run" in out
    assert prop(f"{ROOT}/pve-1@{auto[0]}", "org.beadm:important") == "kernel"
    assert prop(f"{ROOT}/pve-1@{auto[0]}", "org.beadm:description") == "apt: upgrade 1 (zsh)"
    # beadm.conf saying no: the hook reads its input and does nothing
    CONF.write_text("auto_snapshot = no\n")
    before = everything()
    assert sh("sh", "-c", f"{hook} <<'E'\n{first}E\n") == ""
    assert everything() == before
