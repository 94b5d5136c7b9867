# Boot 2: luod takes its sessions back; kill -9 it before anyone reclaimed; restart; reclaim all.
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
memtotal >"$SHARE/memtotal-boot2"   # preserved memory still reserved here
# Memory accounting: luod and vm-a's VMM each in their own cgroup (docs/kernel.md §6.4).
echo +memory >/sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/luod /sys/fs/cgroup/vm-a
echo $$ >/sys/fs/cgroup/luod/cgroup.procs   # luod (and its keeper) start from here
start_luod 2a
luod_list >"$SHARE/list-after-kexec.json"
kill -9 "$LUOD_PID"; wait "$LUOD_PID" 2>/dev/null
start_luod 2b
echo $$ >/sys/fs/cgroup/cgroup.procs        # the VMMs are not luod
status=0
sh -c "echo \$\$ >/sys/fs/cgroup/vm-a/cgroup.procs && exec luod-demo-vmm reclaim --id vm-a \
    --record $SHARE/vm-a.json" >"$SHARE/vm-a-reclaim.log" 2>&1 || status=1
python "$SCRIPTS/partial_preserve.py" reclaim "$SOCK" "$SHARE/partial-reclaim.json" || status=1
for vm in vm-b vm-c; do
    luod-demo-vmm reclaim --id $vm --record "$SHARE/$vm.json" >"$SHARE/$vm-reclaim.log" 2>&1 || status=1
done
cat /sys/fs/cgroup/vm-a/memory.peak >"$SHARE/memory-peak-vm-a"
cat /sys/fs/cgroup/luod/memory.peak >"$SHARE/memory-peak-luod"
luod_list >"$SHARE/list-after-reclaim.json"
memtotal >"$SHARE/memtotal-after"
exit $status
