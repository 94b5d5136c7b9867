# Chaos boot 4: the VM handed over before the keeper was killed comes back.
. "$SCRIPTS/chaos-common.sh"
set -x
start_luod 4
reclaim vm-k
snapshot keeper-after
