# Boot 3 (7.2.13 again, after a live update from 7.3.4): vm-b's memory comes back; the history.
# Set by the test: RUNNING_KERNEL (7.2.13).
STATE=$SHARE/luod-state
CUSTODY=memory  # luod alone holds the sessions: one process fewer to start per boot
. "$SCRIPTS/common.sh"
set -x
uname -rv >"$SHARE/uname-3"
start_luod 3
luod-demo-vmm reclaim --id vm-b --record "$SHARE/vm-b.json" >"$SHARE/vm-b-reclaim.log" 2>&1 ||
    { cat "$SHARE/vm-b-reclaim.log"; exit 1; }
for _ in $(seq 1 600); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done
luoctl --json history >"$SHARE/history.json"
for _ in $(seq 1 1500); do  # the last step's canaries verified (the QEMU canary restored): the report
    luoctl --json qualify show >"$SHARE/qualification.json"; [ $? -ne 6 ] && break
    sleep 0.2
done
luoctl qualify show --junit "$SHARE/qualification.xml" >"$SHARE/qualification.txt"
for _ in $(seq 1 300); do  # the end of the qualification stops its QEMU canary: luod drops it
    luod_list >"$SHARE/vms-after-qualification.json"
    grep -q luodq- "$SHARE/vms-after-qualification.json" || break
    sleep 0.2
done
