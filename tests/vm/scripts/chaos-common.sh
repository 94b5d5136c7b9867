# Helpers of the chaos matrix (tests/vm/test_chaos.py), sourced by chaos-N.sh.
STATE=$SHARE/luod-state  # persistent, like /var/lib/luod: history spans boots
. "$SCRIPTS/common.sh"
P=$SHARE/points
mkdir -p "$P" "$STATE"
luoctl() { python -m tests.vm.scripts.luoctl "$@"; }

vmm() {  # vmm ID MODE ON_FREEZE RAM...: a demo VMM that writes until FREEZE (reconnects to luod)
    id=$1 mode=$2 on_freeze=$3; shift 3
    luod-demo-vmm run --id "$id" --mode "$mode" --on-freeze "$on_freeze" "$@" \
        --record "$SHARE/$id.json" >>"$SHARE/$id-run.log" 2>&1 &
}

reclaim() {  # reclaim VM...: get the RAM back, check every sha256, DONE
    for vm in "$@"; do
        luod-demo-vmm reclaim --id "$vm" --record "$SHARE/$vm.json" >"$SHARE/$vm-reclaim.log" 2>&1
    done
}

count() { n=$(grep -c "$2" "$1" 2>/dev/null); echo "${n:-0}"; }

wait_count() {  # wait_count FILE PATTERN N: until PATTERN is in FILE N times
    for _ in $(seq 1 900); do
        [ "$(count "$1" "$2")" -ge "$3" ] && return 0
        sleep 0.1
    done
    echo "timed out waiting for $3 x '$2' in $1"; cat "$1"; exit 1
}

launch_luod() {  # launch_luod TAG: luod in the background, not waiting for it (a test hold)
    printf '[kexec]\nrunning_image = "%s"\n' "$NEXT_KERNEL" >/run/luod-vm.toml
    luod --config /run/luod-vm.toml --state-dir "$STATE" --custody keeper \
        >>"$SHARE/luod-$1.log" 2>&1 &
    LUOD_PID=$!
}

start_held() {  # start_held TAG HOLD: luod as deployed (keeper custody); its update waits at HOLD
    export LUOD_TEST_HOLD="$2"
    start_luod "$1"
    unset LUOD_TEST_HOLD
}

kill9_luod() { kill -9 "$LUOD_PID"; wait "$LUOD_PID" 2>/dev/null; }

snapshot() {  # snapshot POINT: what luod says and what the kernel's sessions are held by
    luod_list >"$P/$1-list.json"
    luoctl history >"$P/$1-history.json"
    python -m tests.vm.scripts.chaos_sessions >"$P/$1-sessions.json"
    cat /sys/kernel/kexec_loaded >"$P/$1-kexec-loaded"
}
