# Boot 2 (after the kexec): the reclaim units ran after luod-ready.target (enable-2), which
# luod reaches at exec; record what systemd handed luod, its log, the VMs, the history.
. "$SHARE/lib.sh"
set -x
echo "stage-start $(now)" >>"$SHARE/times-2.txt"
luod_up
listen_env "$(main_pid)" >"$SHARE/listen-env-kexec.txt"
for vm in $VMS; do
    echo "$vm $(systemctl show -P Result "sdg-reclaim@$vm.service")" >>"$SHARE/reclaim-results.txt"
    # when systemd exec'd it (realtime, µs): luod.service said READY=1 at exec (luod.start)
    echo "$vm $(systemctl show -P ExecMainStartTimestamp --timestamp=us+utc "sdg-reclaim@$vm.service")" \
        >>"$SHARE/reclaim-exec-times.txt"
done
luod_journal luod-journal-2.txt
luoctl --json vms >"$SHARE/vms-after-reclaim.json"
luoctl --json history >"$SHARE/history.json"
systemd-analyze >"$SHARE/analyze-2.txt" 2>&1 || true
systemd-analyze blame --no-pager 2>/dev/null | head -15 >"$SHARE/blame-2.txt" || true
