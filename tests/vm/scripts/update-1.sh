# Boot 1: three demo VMMs keep writing; three aborted updates (a VMM that never answers
# FREEZE, one that refuses, an explicit ABORT), each followed by resume; then a real update.
STATE=$SHARE/luod-state  # persistent, like /var/lib/luod: history spans boots
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
start_luod 1
vmm() {  # vmm ID MODE ON_FREEZE RAM...
    id=$1 mode=$2 on_freeze=$3; shift 3
    luod-demo-vmm run --id "$id" --mode "$mode" --on-freeze "$on_freeze" "$@" \
        --record "$SHARE/$id.json" >"$SHARE/$id-run.log" 2>&1 &
}
luoctl() { python -m tests.vm.scripts.luoctl "$@"; }
vmm vm-a handover ready --ram ram0=64M --ram state=4K; A=$!
vmm vm-b handover ready --ram ram0=16M; B=$!
vmm vm-c delegation ready --ram ram0=16M; C=$!
wait_for "$SHARE/vm-a-run.log" handed-over
wait_for "$SHARE/vm-b-run.log" handed-over
wait_for "$SHARE/vm-c-run.log" subscribed

# 1. a VMM that never answers FREEZE: abort at the freezing deadline
vmm vm-x handover ignore --ram ram0=4M; X=$!
wait_for "$SHARE/vm-x-run.log" handed-over
luoctl update --kernel "$NEXT_KERNEL" --freezing 3 >"$SHARE/abort-deadline.json"
wait_for "$SHARE/vm-a-run.log" resumed
kill -TERM $X; wait $X           # it stops for good; luod keeps its session

# 2. a VMM that answers FREEZE with an error
vmm vm-y handover refuse --ram ram0=4M; Y=$!
wait_for "$SHARE/vm-y-run.log" handed-over
luoctl update --kernel "$NEXT_KERNEL" --freezing 10 >"$SHARE/abort-refused.json"
kill -TERM $Y; wait $Y

# 3. an explicit ABORT while a VMM stalls the freeze
vmm vm-z handover ignore --ram ram0=4M; Z=$!
wait_for "$SHARE/vm-z-run.log" handed-over
luoctl update --kernel "$NEXT_KERNEL" --freezing 120 --no-wait >"$SHARE/abort-started.json"
wait_for "$SHARE/vm-z-run.log" ignoring-freeze
luoctl abort >"$SHARE/abort-explicit.json"
kill -TERM $Z; wait $Z
luod_list >"$SHARE/list-after-aborts.json"
grep -c resumed "$SHARE/vm-b-run.log" >"$SHARE/vm-b-resumes"

# 4. the real update: freeze, kexec
sleep 0.3
luoctl update --kernel "$NEXT_KERNEL" --freezing 20 >"$SHARE/update.json"
echo "the update returned instead of kexecing"; cat "$SHARE/update.json"; exit 1
