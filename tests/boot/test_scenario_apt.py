"""Issue 13.3/13.4: the automatic snapshot before apt, on the Proxmox-like machine.

``beadm init`` writes ``/etc/apt/apt.conf.d/99beadm`` into the running BE; real apt runs
(local packages, no network) then go through its ``DPkg::Pre-Install-Pkgs`` hook with no
``--root``: nothing while ``beadm.conf`` is absent, a snapshot of the running BE once it says
``auto_snapshot = yes``. A BE made from that snapshot boots with the package as it was
before the upgrade, and the next apt run snapshots that (running) BE; back in pve-1, with
``keep = 1``, the hook's own prune destroys the older automatic snapshot once no BE depends
on it."""

from __future__ import annotations

import pytest
from pvelab import run_steps
from scenario import ok, steps

pytestmark = pytest.mark.boot

DEB = r"""
mkdeb() {  # mkdeb VERSION -> /run/deb/a-VERSION.deb
    mkdir -p "/run/deb/p$1/DEBIAN"
    printf 'Package: beadm-boot-a\nVersion: %s\nArchitecture: all\n%s\n%s\n' "$1" \
        'Maintainer: lab <lab@example.invalid>' 'Description: beadm boot test' \
        > "/run/deb/p$1/DEBIAN/control"
    dpkg-deb --build --root-owner-group "/run/deb/p$1" "/run/deb/a-$1.deb" >/dev/null; }
aptq() { apt-get -y -q -o Dpkg::Use-Pty=0 "$@" 2>&1 | tee /run/apt.out; }
autos() { zfs list -H -t snapshot -o name -d 1 "rpool/ROOT/$1" | grep @beadm-auto- || true; }
version() { dpkg-query -W -f '${Version}' beadm-boot-a; }
"""


def test_apt_hook_snapshot_go_back_and_prune() -> None:
    res = run_steps(*steps(
        DEB + r"""
root_is rpool/ROOT/pve-1
beadm_as_on_a_host
zfs get -H -o property,value used,available rpool
beadm init pve-1
grep -F 'BEADM_HOOK=apt' /etc/apt/apt.conf.d/99beadm
mkdeb 1.0; mkdeb 2.0
# no beadm.conf: the hook does nothing
aptq install /run/deb/a-1.0.deb
test -z "$(autos pve-1)"
test "$(version)" = 1.0
mkdir -p /etc/beadm
printf 'auto_snapshot = yes\npool_min_free = 1%%\n' > /etc/beadm/beadm.conf
aptq install /run/deb/a-2.0.deb
test "$(version)" = 2.0
S=$(autos pve-1)
echo "auto snapshot: $S"
test "$(echo "$S" | wc -l)" = 1
grep -F "beadm: automatic snapshot $S taken" /run/apt.out
test "$(zfs get -H -o value org.beadm:description "$S")" = "apt: upgrade 1 (beadm-boot-a)"
test "$(zfs get -H -o value -s local org.beadm:auto "$S")" = apt
beadm list -s > /run/list.out; cat /run/list.out
grep -F "apt: upgrade 1 (beadm-boot-a)" /run/list.out
# go back: a BE from the snapshot
beadm create -e "pve-1@${S#*@}" before-upgrade
beadm activate before-upgrade
""",
        DEB + r"""
root_is rpool/ROOT/before-upgrade
test "$(version)" = 1.0
S=$(autos pve-1)
test -n "$S"
# the snapshot this BE was cloned from is held
beadm prune -n -v > /run/prune.out; cat /run/prune.out
grep -F "origin of rpool/ROOT/before-upgrade" /run/prune.out
# an apt run here snapshots this BE, the running one
mkdeb 2.0
aptq install /run/deb/a-2.0.deb
test "$(autos before-upgrade | wc -l)" = 1
test "$(autos pve-1)" = "$S"
beadm activate pve-1
""",
        DEB + r"""
root_is rpool/ROOT/pve-1
test "$(version)" = 2.0
OLD=$(autos pve-1)
test -n "$OLD"
beadm destroy -F before-upgrade
test "$(autos pve-1)" = "$OLD"   # destroy keeps an automatic origin; prune decides
printf 'auto_snapshot = yes\nkeep = 1\npool_min_free = 1%%\n' > /etc/beadm/beadm.conf
aptq remove beadm-boot-a
grep -F "beadm: destroyed $OLD (older than the newest 1)" /run/apt.out
NEW=$(autos pve-1)
echo "left: $NEW"
test "$(echo "$NEW" | wc -l)" = 1
test "$NEW" != "$OLD"
test "$(zfs get -H -o value org.beadm:description "$NEW")" = "apt: remove 1 (beadm-boot-a)"
beadm prune -v
beadm check
""",
    ), timeout=1500)
    ok(res)
    assert res.roots == ["rpool/ROOT/pve-1", "rpool/ROOT/before-upgrade", "rpool/ROOT/pve-1"]
