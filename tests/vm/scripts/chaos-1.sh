# Chaos boot 1: kill -9 luod in every phase before the reboot (preparing, prepared, freezing
# with VMMs paused, frozen, the handover written just before the reboot syscall); each restart
# (keeper custody) ends the update aborted and every VMM, back on its own, gets RESUME. Then an
# update goes through: kexec.
. "$SCRIPTS/chaos-common.sh"
set -x
start_held 1 preparing
vmm vm-a handover ready --ram ram0=16M --ram state=4K
vmm vm-b handover ready --ram ram0=8M
vmm vm-c delegation ready --ram ram0=8M
vmm vm-s handover ignore --ram ram0=4M; S=$!   # never answers FREEZE
wait_for "$SHARE/vm-a-run.log" handed-over
wait_for "$SHARE/vm-b-run.log" handed-over
wait_for "$SHARE/vm-c-run.log" subscribed
wait_for "$SHARE/vm-s-run.log" handed-over
VMMS="vm-a vm-b vm-c vm-s"
n=0

update() { luoctl update --kernel "$NEXT_KERNEL" --freezing 120 --no-wait >"$P/$1-start.json"; }

kill_at() {  # kill_at POINT TAG_HELD NEXT_HOLD: kill -9 luod, restart it, every VMM back + RESUMEd
    kill9_luod
    n=$((n + 1))
    start_held "$1" "$3"
    for vm in $VMMS; do
        wait_count "$SHARE/$vm-run.log" reconnected $n
        wait_count "$SHARE/$vm-run.log" '"resumed"' $n
    done
    snapshot "$1"
}

update preparing   # 1. a delegated VM not yet preserved, the handover ones are
wait_for "$SHARE/luod-1.log" test-hold
kill_at preparing 1 prepared

update prepared    # 2. every VM preserved, nothing paused
wait_for "$SHARE/luod-preparing.log" test-hold
kill_at prepared preparing ""

update freezing    # 3. vm-a, vm-b, vm-c paused (READY), vm-s still running
for vm in vm-a vm-b vm-c; do wait_count "$SHARE/$vm-run.log" '"frozen"' 1; done
wait_count "$SHARE/vm-s-run.log" ignoring-freeze 1
kill_at freezing prepared frozen
kill -TERM $S; wait $S   # vm-s stops for good; luod keeps its session (counted as paused)
VMMS="vm-a vm-b vm-c"

update frozen      # 4. every VMM paused, before the handover is written
wait_for "$SHARE/luod-freezing.log" test-hold
kill_at frozen freezing reboot

update reboot      # 5. state session written and synced, just before reboot(KEXEC)
wait_for "$SHARE/luod-frozen.log" test-hold
kill_at reboot frozen ""

luoctl update --kernel "$NEXT_KERNEL" --freezing 60 >"$P/final-update.json"
echo "the update returned instead of kexecing"; cat "$P/final-update.json"; exit 1
