# bench/systemd_blackout.py, last boot: the reclaim units ran; record them and the history.
. "$SHARE/lib.sh"
set -x
luod_up
for vm in $VMS; do
    echo "$vm $(systemctl show -P Result "sdg-reclaim@$vm.service")" >>"$SHARE/reclaim-results-$BOOT.txt"
done
luoctl --json history >"$SHARE/history-$BOOT.json"
