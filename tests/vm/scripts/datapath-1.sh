# Boot 1: luod + three demo VMMs hand over; kill -9 luod and restart it; then kexec.
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
memtotal >"$SHARE/memtotal-before"
start_luod 1a
luod-demo-vmm run --id vm-a --ram ram0=64M --ram state=4K --record "$SHARE/vm-a.json" >"$SHARE/vm-a-run.log" 2>&1 &
A=$!
luod-demo-vmm run --id vm-b --ram ram0=8M --ram ram1=16M --record "$SHARE/vm-b.json" >"$SHARE/vm-b-run.log" 2>&1 &
B=$!
wait_for "$SHARE/vm-a-run.log" handed-over
wait_for "$SHARE/vm-b-run.log" handed-over
sleep 0.5                       # the guests keep writing into their RAM
kill -USR1 $A $B && wait $A $B  # stop writing, record digests
kill -9 "$LUOD_PID"; wait "$LUOD_PID" 2>/dev/null
start_luod 1b                   # back from the keeper + disk manifest
luod_list >"$SHARE/list-after-restart.json"
python "$SCRIPTS/partial_preserve.py" hand "$SOCK" "$SHARE/partial-hand.json"   # issue 13 #8
luod-demo-vmm run --id vm-c --mode delegation --ram ram0=16M --record "$SHARE/vm-c.json" >"$SHARE/vm-c-run.log" 2>&1 &
wait_for "$SHARE/vm-c-run.log" subscribed
sync
python -c "from luod.vmm.client import Client; Client('$SOCK').kexec('$NEXT_KERNEL')" >"$SHARE/kexec.log" 2>&1
echo "kexec returned: $?"; cat "$SHARE/kexec.log"; exit 1
