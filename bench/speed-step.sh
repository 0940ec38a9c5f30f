#!/bin/bash
# A pvelab step (lab/pvelab run --timeout 2400 bench/speed-step.sh): issue 15's benchmark in
# the Proxmox-like machine. Installs the checkout's beadm on the machine's own disk,
# byte-compiled (as the .deb's py3compile does: a host never imports beadm over 9p without
# .pyc files, which the lab's /src wrapper does), runs `beadm init`, creates pve-2, then
# bench/speed.py. SPEED_ARGS overrides its arguments (a copy of this step can set it).
#
# Side by side: when the checkout has bench/.before/beadm (an untracked copy of an older
# src/beadm, e.g. `git archive BASE src/beadm | tar -x --strip-components=1 -C bench/.before`),
# that copy is measured too, as "before", next to the checkout's code ("after"), in the
# same machine and run.
set -euo pipefail
D=/usr/local/lib/beadm-bench
rm -rf "$D" && mkdir -p "$D" && cp -r /src/src/beadm "$D/"
python3 -m compileall -q "$D"
VARIANTS=(--beadm "after=$D")
if [ -d /src/bench/.before/beadm ]; then
    B=/usr/local/lib/beadm-before
    rm -rf "$B" && mkdir -p "$B" && cp -r /src/bench/.before/beadm "$B/"
    python3 -m compileall -q "$B"
    VARIANTS=(--beadm "before=$B" "${VARIANTS[@]}")
fi
cp /src/bench/speed.py /root/speed.py
cd /root   # not the 9p checkout: python -m puts the cwd first on sys.path
unset PYTHONDONTWRITEBYTECODE
b() { PYTHONPATH="$D" python3 -m beadm "$@"; }
echo "machine: $(nproc) vCPU, $(uname -r), $(python3 --version), $(zfs version | head -1)"
echo "ESPs: $(tr '\n' ' ' < /etc/kernel/proxmox-boot-uuids)"
TIMEFORMAT='%R s'
echo "beadm version as the lab's /src wrapper runs it (9p, no .pyc), 3 runs:"
for src in /src/src /src/bench/.before; do
    [ -d "$src/beadm" ] || continue
    echo "  $src:"
    for _ in 1 2 3; do time (PYTHONPATH=$src PYTHONDONTWRITEBYTECODE=1 python3 -m beadm version >/dev/null); done
done
echo "python3 -c pass, 3 runs:"
for _ in 1 2 3; do time (python3 -c pass); done
b init
b create -d 'benchmark' pve-2
b list
python3 /root/speed.py "${VARIANTS[@]}" ${SPEED_ARGS:---profile --runs 3 --sizes 3,10,100}
b list | head -5
b check || true
