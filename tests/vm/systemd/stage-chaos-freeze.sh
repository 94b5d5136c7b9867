# Chaos matrix, systemd guest (tests/vm/test_chaos.py): kill -9 luod.service while freezing,
# vm-a paused (READY) and vm-s ignoring FREEZE. systemd restarts luod (every session from the fd
# store); the update ends aborted and both VMMs, reconnected, get RESUME. Then an update through
# systemctl kexec (stage-reclaim.sh checks the bytes in boot 2).
. "$SHARE/lib.sh"
set -x
luod_up
start_vmms
luoctl update start --kernel "$NEXT_KERNEL" --reuse-cmdline --deadline freezing=120 \
    >"$SHARE/update-start-chaos.txt" 2>&1 &
wait_for "$SHARE/vm-a-run.log" '"frozen"'
wait_for "$SHARE/vm-s-run.log" ignoring-freeze
old=$(main_pid)
kill -9 "$old"
for _ in $(seq 1 600); do
    pid=$(main_pid)
    [ "$pid" != "$old" ] && [ "$pid" != 0 ] &&
        [ "$(systemctl show -P ActiveState luod.service)" = active ] && break
    sleep 0.05
done
luod_up
listen_env "$(main_pid)" >"$SHARE/listen-env-chaos.txt"
for vm in $VMS; do wait_for "$SHARE/$vm-run.log" '"resumed"'; done
luoctl --json history >"$SHARE/history-chaos.json"
luoctl --json vms >"$SHARE/vms-chaos.json"
systemctl stop sdg-vmm@vm-s.service   # it records its digests and stops; luod keeps its VM
start_update
sleep 600  # the kexec stops this unit
