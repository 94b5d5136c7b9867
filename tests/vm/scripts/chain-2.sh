# Boot 2 (7.3.4, after a live update from 7.2.13): vm-a's memory comes back byte for byte; a
# new VM hands its memory over, and a live update back into 7.2.13.
# Set by the test: RUNNING_KERNEL (7.3.4), NEXT_KERNEL (7.2.13).
STATE=$SHARE/luod-state
CUSTODY=memory  # luod alone holds the sessions: one process fewer to start per boot
. "$SCRIPTS/common.sh"
set -x
uname -rv >"$SHARE/uname-2"
start_luod 2
# vm-b first: luod's qualification takes its step back into 7.2.13 as soon as vm-a is done
# (the update that brought it here is over), taking every VM then preserved along (--with-vms)
luod-demo-vmm run --id vm-b --ram ram0=4M --record "$SHARE/vm-b.json" >"$SHARE/vm-b-run.log" 2>&1 &
wait_for "$SHARE/vm-b-run.log" handed-over
luod-demo-vmm reclaim --id vm-a --record "$SHARE/vm-a.json" >"$SHARE/vm-a-reclaim.log" 2>&1 ||
    { cat "$SHARE/vm-a-reclaim.log"; exit 1; }
# hop 1's update completed with vm-a's DONE; 7.3.4 was booted by a live update, so its KHO
# string comes from its image (no kho/out/fdt after a KHO boot)
wait
echo "the qualification's step back returned instead of kexecing"; exit 1
