# Helpers for the systemd guest's stage scripts (sourced; $SHARE set by the driver).
VMS=${VMS:-vm-a vm-b vm-c}

# Every luoctl call is bounded: a luod that never answers must fail the stage, not hang it.
luoctl() { timeout 120 /usr/bin/luoctl "$@"; }

now() { cut -d' ' -f1 /proc/uptime; }

# wait_for FILE PATTERN [TENTHS]
wait_for() {
    for _ in $(seq 1 "${3:-600}"); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1"
    cat "$1" 2>/dev/null
    return 1
}

# luod_up: luod.service active (READY=1: its VMM socket serves) and its REST API answering.
luod_up() {
    for _ in $(seq 1 600); do
        if [ "$(systemctl show -P ActiveState luod.service)" = active ] &&
            luoctl status >/dev/null 2>&1; then
            return 0
        fi
        if systemctl -q is-failed luod.service luod.socket; then
            break
        fi
        sleep 0.1
    done
    echo "luod did not come up"
    systemctl status luod.service --no-pager
    return 1
}

main_pid() { systemctl show -P MainPID luod.service; }

# listen_env PID: LISTEN_* as systemd passed them (luod unsets them in its own environ, the
# initial block in /proc/PID/environ keeps them).
listen_env() { tr '\0' '\n' <"/proc/$1/environ" | grep '^LISTEN_' || true; }

# luod_journal NAME: luod's JSON log lines of this boot, to the share.
luod_journal() { journalctl -b -u luod.service -o cat --no-pager >"$SHARE/$1"; }

# start_vmms: the demo VMM units hand their RAM over; wait until all did.
start_vmms() {
    for vm in $VMS; do : >"$SHARE/$vm-run.log"; done
    for vm in $VMS; do systemctl start "sdg-vmm@$vm.service"; done
    for vm in $VMS; do wait_for "$SHARE/$vm-run.log" handed-over; done
}

# start_update: `luoctl update start` (kexec.mode comes from the share's etc-N/luod/luod.toml),
# watched live. Marks the kexec for the driver first; returns when luoctl has.
start_update() {
    : >"$SHARE/kexec-$BOOT"
    luoctl update watch >"$SHARE/update-watch-$BOOT.txt" 2>&1 &
    for _ in $(seq 1 100); do [ -s "$SHARE/update-watch-$BOOT.txt" ] && break; sleep 0.1; done
    echo "update-start $(date +%s.%N)" >>"$SHARE/times-$BOOT.txt"
    luoctl update start --kernel "$NEXT_KERNEL" --reuse-cmdline --deadline freezing=30 \
        >"$SHARE/update-start-$BOOT.txt" 2>&1
}

# unit_times: when this boot's units started, as systemd saw them (CLOCK_MONOTONIC µs, 0 =
# kernel up), and the journal so far: where the time between the kernel and luod went.
unit_times() {
    for prop in UserspaceTimestampMonotonic FinishTimestampMonotonic; do
        echo "manager $prop $(systemctl show -P "$prop")"
    done >"$SHARE/unit-times-$BOOT.txt"
    for unit in luod.socket luod.service luod-ready.target sdg-stamp.service \
        systemd-remount-fs.service $(for vm in $VMS; do echo "sdg-reclaim@$vm.service"; done) \
        sdg-driver.service; do
        for prop in InactiveExitTimestampMonotonic ExecMainStartTimestampMonotonic \
            ActiveEnterTimestampMonotonic; do
            echo "$unit $prop $(systemctl show -P "$prop" "$unit")"
        done
    done >>"$SHARE/unit-times-$BOOT.txt"
    systemd-analyze time >"$SHARE/analyze-time-$BOOT.txt" 2>&1 || true
    systemd-analyze critical-chain luod.service >>"$SHARE/analyze-time-$BOOT.txt" 2>&1 || true
    systemctl show -P After luod.service >>"$SHARE/analyze-time-$BOOT.txt" 2>&1 || true
    journalctl -b -o short-monotonic --no-pager >"$SHARE/journal-early-$BOOT.txt" 2>&1 || true
}

# python_times: python3 -c pass and import luod.main, 3 runs each (uptime seconds before and
# after), and -X importtime of luod.main: what luod's start costs before it does anything.
python_times() {
    for code in pass 'import luod.main'; do
        for _ in 1 2 3; do
            a=$(now)
            python3 -c "$code"
            echo "$code|$a|$(now)"
        done
    done >"$SHARE/python-times-$BOOT.txt"
    python3 -X importtime -c 'import luod.main' 2>"$SHARE/importtime-$BOOT.txt"
}
