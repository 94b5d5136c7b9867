# Chaos boot 3: the later update's VMs come back. Then kill -9 the keeper, then luod; restart
# luod as deployed; an update carries the VM across one more kexec.
. "$SCRIPTS/chaos-common.sh"
set -x
start_luod 3
reclaim vm-d vm-e
snapshot later

vmm vm-k handover ready --ram ram0=8M
wait_for "$SHARE/vm-k-run.log" handed-over
kill -9 "$(cat /run/luod/keeper.sock.lock)"
sleep 3   # luod notices the keeper is gone
python -m tests.vm.scripts.chaos_sessions >"$P/keeper-killed-sessions.json"
kill9_luod
start_luod keeper
wait_count "$SHARE/vm-k-run.log" reconnected 1
snapshot keeper
luoctl update --kernel "$NEXT_KERNEL" --freezing 60 >"$P/keeper-update.json"
echo "the update returned instead of kexecing"; cat "$P/keeper-update.json"; exit 1
