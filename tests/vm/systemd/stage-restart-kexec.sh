# Boot 1 of test_systemd_guest: three demo VMM units hand over, stop (digests recorded);
# kill -9 luod, systemd restarts it and it is back from the fd store; then the update with
# kexec.mode = systemd (etc-1/luod/luod.toml).
. "$SHARE/lib.sh"
set -x
echo "stage-start $(now)" >>"$SHARE/times-1.txt"
luod_up
echo "luod-up $(now)" >>"$SHARE/times-1.txt"
start_vmms
sleep 0.5                                   # the guests keep writing into their RAM
for vm in $VMS; do systemctl kill -s USR1 --kill-whom=main "sdg-vmm@$vm.service"; done
for vm in $VMS; do wait_for "$SHARE/$vm-run.log" recorded; done
luoctl --json vms >"$SHARE/vms-before-kill.json"
listen_env "$(main_pid)" >"$SHARE/listen-env-cold.txt"

old=$(main_pid)
echo "kill $(now)" >>"$SHARE/times-1.txt"
kill -9 "$old"
for _ in $(seq 1 600); do
    pid=$(main_pid)
    [ "$pid" != "$old" ] && [ "$pid" != 0 ] &&
        [ "$(systemctl show -P ActiveState luod.service)" = active ] && break
    sleep 0.05
done
echo "restarted $(now)" >>"$SHARE/times-1.txt"
luod_up
systemctl show -P NRestarts luod.service >"$SHARE/nrestarts"
listen_env "$(main_pid)" >"$SHARE/listen-env-restart.txt"
luoctl --json vms >"$SHARE/vms-after-restart.json"
luod_journal luod-journal-1.txt

# kexec.mode = auto here: preflight must find systemd 262 and the unit's fd-store preservation.
luoctl --json preflight --kernel "$NEXT_KERNEL" --reuse-cmdline >"$SHARE/preflight-1.json" || true
start_update
luod_journal luod-journal-1-update.txt
sleep 600  # the kexec stops this unit
