# Boot 2: luod reclaims; every VMM (incl. the ones stopped in boot 1) gets its memory back.
STATE=$SHARE/luod-state  # persistent, like /var/lib/luod: history spans boots
MANAGED_BRIDGES='"br0"'
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
# the uplink is back (luod's watch reads its sysfs)
ip link add up0 type veth peer name up0-peer && ip link set up0-peer up && ip link set up0 up
start_luod 2
# luoctl update wait after the reboot: it waits (for luod's REST API too, which starts once
# every VM is reclaimed and done) until the update that crossed the kexec ends, and reports it
( luoctl update wait --timeout 240 >"$SHARE/wait-after-kexec.txt" 2>&1
  echo $? >"$SHARE/wait-after-kexec.rc" ) & WAITING=$!
status=0
for vm in vm-a vm-b vm-c vm-x vm-y vm-z; do
    luod-demo-vmm reclaim --id $vm --record "$SHARE/$vm.json" >"$SHARE/$vm-reclaim.log" 2>&1 || status=1
done
wait $WAITING
ip -d -j link show >"$SHARE/links-after.json"
for _ in $(seq 1 300); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done
luoctl --json history >"$SHARE/history.json"
exit $status
