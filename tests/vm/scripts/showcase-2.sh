# `make run`, boot 2: luod takes the sessions back; every VMM reclaims and checks its memory.
. "$SCRIPTS/common.sh"
exec >/dev/console 2>&1
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
mkdir -p "$STATE"
say "boot 2 after the kexec: $(dmesg | grep -o 'liveupdate number: [0-9]*')"
start_luod 2
status=0
for vm in vm-a vm-b vm-c; do
    luod-demo-vmm reclaim --id $vm --record "$SHARE/$vm.json" >"$SHARE/$vm-reclaim.log" 2>&1 || status=1
done
for _ in $(seq 1 300); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done
luoctl --json history >"$SHARE/history.json"
say "luoctl history"; luoctl history
exit $status
