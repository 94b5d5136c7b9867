# Boot 2: luod takes the sessions back; luod-qemu restores the guest (QEMU on the reclaimed RAM,
# -incoming, the device state of the freeze, cont). Its QEMU binary is l2guest's launcher, which
# probes the RAM as LUO carried it (the counter at QMP stop) before it execs the real QEMU.
MANAGED_BRIDGES='"br-l2"'
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
start_luod 2
L2="python -m tests.vm.l2guest"
printf '#!/bin/sh\nexec %s/bin/python -m tests.vm.l2guest launch %s "$@"\n' \
    "$VENV" "$SHARE/l2-at-restore.json" >/tmp/probe-qemu
chmod +x /tmp/probe-qemu
luod-qemu restore --id l2 --qemu /tmp/probe-qemu --report "$SHARE/l2-report.jsonl" \
    >"$SHARE/l2-run-2.log" 2>&1 &
QPID=$!
wait_for "$SHARE/l2-run-2.log" '"restored"'
cat /sys/class/net/l2-tap0/carrier >"$SHARE/l2-carrier-2"  # the restored QEMU has it open
ip -d -j link show dev l2-tap0 >"$SHARE/l2-tap-after.json"
$L2 twice /run/luod-qemu/l2.json "$SHARE/l2-after-1.json" "$SHARE/l2-after-2.json"
wait_for "$SHARE/l2-run-2.log" '"preserved"'   # protected again, for the next update
luod_list >"$SHARE/list-after.json"
kill -TERM $QPID && wait $QPID                  # the operator stops the VM: dropped
luod_list >"$SHARE/list-stopped.json"
