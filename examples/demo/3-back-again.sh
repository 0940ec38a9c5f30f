# Boot 3: back in the original BE; the experiment can go.
set -euo pipefail
. /src/examples/demo/lib.sh
booted
show beadm destroy -F pve-2
show beadm list
