# Boot 2: the machine came up in the new BE.
set -euo pipefail
. /src/examples/demo/lib.sh
booted
show cat /etc/kernel/cmdline
show beadm list
echo 'An experiment goes wrong; going back to pve-1:'
show beadm activate pve-1
show beadm list
echo 'Rebooting into pve-1 ...'
