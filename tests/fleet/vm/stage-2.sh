# Boot 2, the next kernel: luod takes the sessions back, the VMMs reclaim (and verify every
# sha256) while the same play runs again: it finds the update reclaiming, waits for its end
# and reads the outcome.
. "$SCRIPTS/common.sh"
. "$FLEET/common.sh"
set -x
luod_up 2
uname -r >"$SHARE/release-2"
for vm in vm-a vm-b vm-c; do
    luod-demo-vmm reclaim --id $vm --record "$SHARE/$vm.json" >"$SHARE/$vm-reclaim.log" 2>&1 &
done
api_up
status=0
play 2 || status=$?
wait
luoctl --json history >"$SHARE/history.json"
exit $status
