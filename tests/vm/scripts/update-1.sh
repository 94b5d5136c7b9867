# Boot 1: three demo VMMs keep writing; three aborted updates (a VMM that never answers
# FREEZE, one that refuses, an explicit ABORT), each followed by resume; then a real update.
STATE=$SHARE/luod-state  # persistent, like /var/lib/luod: history spans boots
MANAGED_BRIDGES='"br0"'  # vm-b's two taps sit on br0; luod rebuilds all three after the kexec
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
ip link add br0 address 52:54:00:0b:00:01 type bridge stp_state 1 forward_delay 400
ip tuntap add dev vm-b-net0 mode tap multi_queue vnet_hdr user 1000 group 1000
ip tuntap add dev vm-b-net1 mode tap user 1001
ip link set vm-b-net0 address 52:54:00:0b:00:10 txqlen 2000 master br0 up
ip link set vm-b-net1 address 52:54:00:0b:00:11 master br0 up
ip link set br0 up
# the host's uplink: a veth with the default route, which luod records at prepare
ip link add up0 type veth peer name up0-peer && ip link set up0-peer up && ip link set up0 up
ip route add default dev up0
start_luod 1
vmm() {  # vmm ID MODE ON_FREEZE RAM...
    id=$1 mode=$2 on_freeze=$3; shift 3
    luod-demo-vmm run --id "$id" --mode "$mode" --on-freeze "$on_freeze" "$@" \
        --record "$SHARE/$id.json" >"$SHARE/$id-run.log" 2>&1 &
}
luoctl() { python -m tests.vm.scripts.luoctl "$@"; }
vmm vm-a handover ready --ram ram0=64M --ram state=4K; A=$!
vmm vm-b handover ready --ram ram0=16M --nic vm-b-net0:br0 --nic vm-b-net1:br0; B=$!
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

# 3. an explicit ABORT while a VMM stalls the freeze; luoctl update wait times out, then
#    sees the abort (exit 6, then 4)
for _ in $(seq 1 300); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done
vmm vm-z handover ignore --ram ram0=4M; Z=$!
wait_for "$SHARE/vm-z-run.log" handed-over
luoctl update --kernel "$NEXT_KERNEL" --freezing 120 --no-wait >"$SHARE/abort-started.json"
wait_for "$SHARE/vm-z-run.log" ignoring-freeze
command luoctl update wait --timeout 5 >"$SHARE/wait-timeout.txt" 2>&1
echo $? >"$SHARE/wait-timeout.rc"
( command luoctl update wait --timeout 120 >"$SHARE/wait-abort.txt" 2>&1
  echo $? >"$SHARE/wait-abort.rc" ) & WAITING=$!
sleep 2
luoctl abort >"$SHARE/abort-explicit.json"
wait $WAITING
kill -TERM $Z; wait $Z
luod_list >"$SHARE/list-after-aborts.json"
grep -c resumed "$SHARE/vm-b-run.log" >"$SHARE/vm-b-resumes"

ip -d -j link show >"$SHARE/links-before.json"

# 4. the real update, through luoctl and the REST API: preflight, start, watch -> kexec
for _ in $(seq 1 300); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done
command luoctl preflight --kernel "$NEXT_KERNEL" --reuse-cmdline >"$SHARE/preflight.txt" 2>&1 ||
    { echo "preflight refused"; cat "$SHARE/preflight.txt"; exit 1; }
command luoctl update watch >"$SHARE/update-watch.txt" 2>&1 &   # follows from now on
for _ in $(seq 1 300); do [ -s "$SHARE/update-watch.txt" ] && break; sleep 0.1; done
command luoctl update start --kernel "$NEXT_KERNEL" --reuse-cmdline --deadline freezing=20 \
    >"$SHARE/update-start.txt" 2>&1 || { cat "$SHARE/update-start.txt"; exit 1; }
wait
echo "the update returned instead of kexecing"; cat "$SHARE/update-watch.txt"; exit 1
