# Boot 1: the freshly installed machine runs rpool/ROOT/pve-1.
set -euo pipefail
. /src/examples/demo/lib.sh
booted
show cat /etc/kernel/cmdline
show beadm init pve-1
show beadm create -d 'before the experiment' pve-2
show beadm activate pve-2
show beadm list
echo 'Rebooting into pve-2 ...'
