# bench/systemd_blackout.py, boots 1 to 3: (after boot 1: the reclaim units ran first, record
# them and the history so far) three demo VMM units hand over and keep writing; an update whose
# kexec.mode comes from etc-N/luod/luod.toml (1, 2: direct, 3: systemd). The VMMs answer FREEZE.
. "$SHARE/lib.sh"
set -x
luod_up
unit_times
if [ "$BOOT" -gt 1 ]; then
    for vm in $VMS; do
        echo "$vm $(systemctl show -P Result "sdg-reclaim@$vm.service")" >>"$SHARE/reclaim-results-$BOOT.txt"
    done
    luoctl --json history >"$SHARE/history-$BOOT.json"
fi
start_vmms
sleep 1                      # the guests keep writing into their RAM
start_update
sleep 600                    # the kexec stops this unit (systemd) or the machine (direct)
