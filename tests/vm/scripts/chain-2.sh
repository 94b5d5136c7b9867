# Boot 2 (7.3.4, after a live update from 7.2.13): vm-a's memory comes back byte for byte; a
# new VM hands its memory over, and a live update back into 7.2.13.
# Set by the test: RUNNING_KERNEL (7.3.4), NEXT_KERNEL (7.2.13).
STATE=$SHARE/luod-state
CUSTODY=memory  # luod alone holds the sessions: one process fewer to start per boot
. "$SCRIPTS/common.sh"
set -x
uname -rv >"$SHARE/uname-2"
start_luod 2
luod-demo-vmm reclaim --id vm-a --record "$SHARE/vm-a.json" >"$SHARE/vm-a-reclaim.log" 2>&1 ||
    { cat "$SHARE/vm-a-reclaim.log"; exit 1; }
luod-demo-vmm run --id vm-b --ram ram0=4M --record "$SHARE/vm-b.json" >"$SHARE/vm-b-run.log" 2>&1 &
wait_for "$SHARE/vm-b-run.log" handed-over
for _ in $(seq 1 600); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done
# hop 1's update completed with vm-a's DONE; 7.3.4 was booted by a live update, so its KHO
# string comes from its image (no kho/out/fdt after a KHO boot)
luoctl update start --kernel "$NEXT_KERNEL" --reuse-cmdline --deadline freezing=30 \
    >"$SHARE/update-2.txt" 2>&1 || { cat "$SHARE/update-2.txt"; exit 1; }
wait
echo "the update returned instead of kexecing"; exit 1
