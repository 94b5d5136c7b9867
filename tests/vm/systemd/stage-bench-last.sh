# bench/systemd_blackout.py, last boot: the reclaim units ran; record them and the history.
. "$SHARE/lib.sh"
set -x
luod_up
unit_times
for vm in $VMS; do
    echo "$vm $(systemctl show -P Result "sdg-reclaim@$vm.service")" >>"$SHARE/reclaim-results-$BOOT.txt"
done
luoctl --json history >"$SHARE/history-$BOOT.json"
# Where luod's start goes in this guest, warm (luod ran): the interpreter and luod's imports.
python_times
