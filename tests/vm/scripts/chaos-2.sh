# Chaos boot 2: kill -9 luod before it retrieved the sessions, and again with half the VMs
# reclaimed; every VM comes back and the update completes. Then fresh VMs and a later update.
. "$SCRIPTS/chaos-common.sh"
set -x
export LUOD_TEST_HOLD=recovery
launch_luod 2-held
unset LUOD_TEST_HOLD
wait_for "$SHARE/luod-2-held.log" test-hold
python -m tests.vm.scripts.chaos_sessions >"$P/before-retrieve-held.json"
kill9_luod
start_luod before-retrieve
snapshot before-retrieve

reclaim vm-a vm-c
python -m tests.vm.scripts.chaos_sessions >"$P/reclaiming-half-sessions.json"
kill9_luod
start_luod reclaiming
snapshot reclaiming-restart
reclaim vm-b vm-s
snapshot reclaiming

vmm vm-d handover ready --ram ram0=8M
vmm vm-e delegation ready --ram ram0=8M
wait_for "$SHARE/vm-d-run.log" handed-over
wait_for "$SHARE/vm-e-run.log" subscribed
luoctl update --kernel "$NEXT_KERNEL" --freezing 60 >"$P/later-update.json"
echo "the update returned instead of kexecing"; cat "$P/later-update.json"; exit 1
