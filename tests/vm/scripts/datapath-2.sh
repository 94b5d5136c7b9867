# Boot 2: luod takes its sessions back; kill -9 it before anyone reclaimed; restart; reclaim all.
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
memtotal >"$SHARE/memtotal-boot2"   # preserved memory still reserved here
# Memory accounting: luod and vm-a's VMM each in their own cgroup (docs/kernel.md §6.4).
echo +memory >/sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/luod /sys/fs/cgroup/vm-a /sys/fs/cgroup/vm-b
echo $$ >/sys/fs/cgroup/luod/cgroup.procs   # luod (and its keeper) start from here
start_luod 2a
luod_list >"$SHARE/list-after-kexec.json"
kill -9 "$LUOD_PID"; wait "$LUOD_PID" 2>/dev/null
start_luod 2b
echo $$ >/sys/fs/cgroup/cgroup.procs        # the VMMs are not luod
status=0
# vm-b's RECLAIM, from a cgroup of its own, forks luod into it and starts the kept retrieve
# helper (luod.kernel.retriever); vm-a's, from another, goes through that helper once it is up.
sh -c "echo \$\$ >/sys/fs/cgroup/vm-b/cgroup.procs && exec luod-demo-vmm reclaim --id vm-b \
    --record $SHARE/vm-b.json" >"$SHARE/vm-b-reclaim.log" 2>&1 || status=1
for _ in $(seq 100); do pgrep -f luod.kernel.retriever_helper >/dev/null && break; sleep 0.1; done
sleep 3   # its interpreter's start under TCG
sh -c "echo \$\$ >/sys/fs/cgroup/vm-a/cgroup.procs && exec luod-demo-vmm reclaim --id vm-a \
    --record $SHARE/vm-a.json" >"$SHARE/vm-a-reclaim.log" 2>&1 || status=1
python "$SCRIPTS/partial_preserve.py" reclaim "$SOCK" "$SHARE/partial-reclaim.json" || status=1
luod-demo-vmm reclaim --id vm-c --record "$SHARE/vm-c.json" >"$SHARE/vm-c-reclaim.log" 2>&1 || status=1
for vm in vm-a vm-b; do
    cat /sys/fs/cgroup/$vm/memory.peak >"$SHARE/memory-peak-$vm"
    cat /sys/fs/cgroup/$vm/cgroup.procs >"$SHARE/procs-$vm-after"  # empty: the helper went home
    rmdir /sys/fs/cgroup/$vm && echo removed >"$SHARE/rmdir-$vm"
done
cat /sys/fs/cgroup/luod/memory.peak >"$SHARE/memory-peak-luod"
luod_list >"$SHARE/list-after-reclaim.json"
memtotal >"$SHARE/memtotal-after"
exit $status
