# Boot 2 (7.3.4, after a live update from 7.2.13): vm-a's memory comes back byte for byte; a
# new VM hands its memory over, and a live update back into 7.2.13.
# Set by the test: RUNNING_KERNEL (7.3.4), NEXT_KERNEL (7.2.13).
STATE=$SHARE/luod-state
. "$SCRIPTS/common.sh"
set -x
uname -rv >"$SHARE/uname-2"
start_luod 2
luod-demo-vmm reclaim --id vm-a --record "$SHARE/vm-a.json" >"$SHARE/vm-a-reclaim.log" 2>&1 ||
    { cat "$SHARE/vm-a-reclaim.log"; exit 1; }
luod-demo-vmm run --id vm-b --ram ram0=4M --record "$SHARE/vm-b.json" >"$SHARE/vm-b-run.log" 2>&1 &
wait_for "$SHARE/vm-b-run.log" handed-over
for _ in $(seq 1 300); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done
wait_idle() {
    for _ in $(seq 1 300); do
        luoctl --json update show | grep -q '"phase": "idle"' && return 0
        sleep 0.1
    done
    echo "the update never went idle"; exit 1
}
wait_idle                        # hop 1's update completed with vm-a's DONE
luoctl --json preflight --kernel "$NEXT_KERNEL" --reuse-cmdline >"$SHARE/preflight-2.json" ||
    { cat "$SHARE/preflight-2.json"; exit 1; }
luoctl update start --kernel "$NEXT_KERNEL" --reuse-cmdline --deadline freezing=20 \
    >"$SHARE/update-2.txt" 2>&1 || { cat "$SHARE/update-2.txt"; exit 1; }
wait
echo "the update returned instead of kexecing"; exit 1
