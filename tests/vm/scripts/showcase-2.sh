# `make run`, boot 2: luod takes the sessions back; every VMM reclaims and checks its memory.
. "$SCRIPTS/common.sh"
exec >/dev/console 2>&1
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
mkdir -p "$STATE"
say "boot 2 after the kexec: $(dmesg | grep -o 'liveupdate number: [0-9]*')"
say "luod and the VMMs start together; the VMMs wait for luod's socket (--wait-for-luod)"
say "luod-qemu restore --id vm-q: QEMU on the reclaimed RAM, -incoming, the device state, cont"
luod-qemu restore --id vm-q --report "$SHARE/vm-q-report.jsonl" >"$SHARE/vm-q-run-2.log" 2>&1 &
RECLAIMS=""
for vm in vm-a vm-c; do
    luod-demo-vmm reclaim --id $vm --record "$SHARE/$vm.json" >"$SHARE/$vm-reclaim.log" 2>&1 &
    RECLAIMS="$RECLAIMS $!"
done
start_luod 2
status=0
for pid in $RECLAIMS; do wait "$pid" || status=1; done
wait_for "$SHARE/vm-q-run-2.log" '"restored"'
say "vm-q after the update"
python -m tests.vm.l2guest twice /run/luod-qemu/vm-q.json "$SHARE/vm-q-after-1.json" "$SHARE/vm-q-after-2.json"
for _ in $(seq 1 300); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done
luoctl --json history >"$SHARE/history.json"
say "luoctl history"; luoctl history
exit $status
