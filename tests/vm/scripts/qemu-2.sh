# Boot 2: luod takes the sessions back; luod-qemu restores both guests (QEMU on the reclaimed
# RAM, -incoming, the device state of the freeze, cont). Their QEMU binary is a launcher (of
# l2guest, of l2linux) that probes the RAM as LUO carried it (the counter at QMP stop) before it
# execs the real QEMU. As a bare init should (docs/operations.md §2.3), the VMMs start first and
# wait for luod's socket (--wait-for-luod), then luod: their start overlaps luod's. The host has
# one start slot here (luod.vmm.start_gate; it has as many as CPUs by default): l2 takes it and
# waits for luod, lx waits for the slot and starts once l2's VM runs.
# Each luod-qemu (and its QEMU) runs in a cgroup of its own, as a luod-qemu@ unit does: l2's
# RECLAIM forks luod into vm-l2 and starts the kept retrieve helper (luod.kernel.retriever); lx's,
# seconds later, goes through that helper into vm-lx. Either way the RAM is charged to the VM's
# cgroup (docs/kernel.md §6.4), and the cgroups are empty and removable once the VMs stop.
export LUOD_VMM_START_SLOTS=1
MANAGED_BRIDGES='"br-l2"'
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
echo +memory >/sys/fs/cgroup/cgroup.subtree_control
mkdir -p /sys/fs/cgroup/vm-l2 /sys/fs/cgroup/vm-lx
in_cgroup() {  # in_cgroup NAME COMMAND... &: COMMAND in cgroup NAME, its pid in $!
    exec sh -c 'echo $$ >"/sys/fs/cgroup/$0/cgroup.procs" && exec "$@"' "$@"
}
L2="python -m tests.vm.l2guest"
printf '#!/bin/sh\nexec %s/bin/python -m tests.vm.l2guest launch %s "$@"\n' \
    "$VENV" "$SHARE/l2-at-restore.json" >/tmp/probe-qemu
chmod +x /tmp/probe-qemu
in_cgroup vm-l2 luod-qemu restore --id l2 --qemu /tmp/probe-qemu \
    --report "$SHARE/l2-report.jsonl" \
    >"$SHARE/l2-run-2.log" 2>&1 &
QPID=$!
wait_for "$SHARE/l2-run-2.log" '"start-slot"'  # l2 holds the slot before lx asks for it
printf '#!/bin/sh\nexec %s/bin/python -m tests.vm.l2linux launch %s "$@"\n' \
    "$VENV" "$SHARE/lx-at-restore.json" >/tmp/probe-qemu-lx
chmod +x /tmp/probe-qemu-lx
in_cgroup vm-lx luod-qemu restore --id lx --qemu /tmp/probe-qemu-lx \
    --report "$SHARE/lx-report.jsonl" \
    >"$SHARE/lx-run-2.log" 2>&1 &
XPID=$!
wait_for "$SHARE/l2-run-2.log" '"waiting-for-luod"'
start_luod 2
wait_for "$SHARE/l2-run-2.log" '"restored"'
cat /sys/class/net/l2-tap0/carrier >"$SHARE/l2-carrier-2"  # the restored QEMU has it open
ip -d -j link show dev l2-tap0 >"$SHARE/l2-tap-after.json"
$L2 twice /run/luod-qemu/l2.json "$SHARE/l2-after-1.json" "$SHARE/l2-after-2.json"
wait_for "$SHARE/lx-run-2.log" '"restored"'
python -m tests.vm.l2linux twice /run/luod-qemu/lx.json "$SHARE/lx-after-1.json" "$SHARE/lx-after-2.json"
wait_for "$SHARE/l2-run-2.log" '"preserved"'   # protected again, for the next update
wait_for "$SHARE/lx-run-2.log" '"preserved"'
luod_list >"$SHARE/list-after.json"
for vm in l2 lx; do cat /sys/fs/cgroup/vm-$vm/memory.stat >"$SHARE/memory-stat-$vm"; done
kill -TERM $QPID $XPID && wait $QPID $XPID      # the operator stops the VMs: dropped
luod_list >"$SHARE/list-stopped.json"
for vm in l2 lx; do  # each QEMU has exited by now or soon: its luod-qemu stopped it
    for _ in $(seq 100); do [ -z "$(cat /sys/fs/cgroup/vm-$vm/cgroup.procs)" ] && break; sleep 0.2; done
    cat /sys/fs/cgroup/vm-$vm/cgroup.procs >"$SHARE/procs-$vm-after"  # the helper went home
    rmdir /sys/fs/cgroup/vm-$vm && echo removed >"$SHARE/rmdir-$vm"
done
