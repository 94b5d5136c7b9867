# Helpers for the data-path VM scenarios (sourced by stage scripts; $VENV, $SHARE set by them).
SOCK=/run/luod/liveupdate.sock
STATE=${STATE:-/tmp/luod-state}  # tmpfs: lost across the kexec unless a stage sets it
export PATH="$VENV/bin:$PATH" PYTHONDONTWRITEBYTECODE=1

start_luod() {  # start_luod TAG: luod in the background, wait until its socket answers
    # No /boot/vmlinuz-RELEASE in the guest: tell luod the image this boot runs (handover-abi).
    printf '[kexec]\nrunning_image = "%s"\n' "${RUNNING_KERNEL:-$NEXT_KERNEL}" >/run/luod-vm.toml
    # A stage that gives VMs taps names the bridges luod manages (rebuilt after the kexec).
    if [ -n "${MANAGED_BRIDGES:-}" ]; then
        printf '[net]\nmanaged_bridges = [%s]\nreclaim_wait = 300\n' "$MANAGED_BRIDGES" \
            >>/run/luod-vm.toml
    fi
    luod --config /run/luod-vm.toml --state-dir "$STATE" --custody "${CUSTODY:-keeper}" \
        >>"$SHARE/luod-$1.log" 2>&1 &
    LUOD_PID=$!
    for _ in $(seq 1 300); do
        [ -S "$SOCK" ] && python -c "from luod.vmm.client import Client; Client('$SOCK').hello()" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "luod did not come up"; cat "$SHARE/luod-$1.log"; exit 1
}

wait_for() {  # wait_for FILE PATTERN [TRIES]
    for _ in $(seq 1 "${3:-600}"); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1"; cat "$1"; exit 1
}

memtotal() { awk '/^MemTotal:/ {print $2}' /proc/meminfo; }

luod_list() { python -c "from luod.vmm.client import Client; import json; print(json.dumps(Client('$SOCK').list()))"; }
