# Boot 2: luod takes its sessions back; kill -9 it before anyone reclaimed; restart; reclaim all.
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
memtotal >"$SHARE/memtotal-boot2"   # preserved memory still reserved here
start_luod 2a
luod_list >"$SHARE/list-after-kexec.json"
kill -9 "$LUOD_PID"; wait "$LUOD_PID" 2>/dev/null
start_luod 2b
status=0
for vm in vm-a vm-b vm-c; do
    luod-demo-vmm reclaim --id $vm --record "$SHARE/$vm.json" >"$SHARE/$vm-reclaim.log" 2>&1 || status=1
done
luod_list >"$SHARE/list-after-reclaim.json"
memtotal >"$SHARE/memtotal-after"
exit $status
