# `make run`, boot 1: luod and three VMMs; an update through luoctl, watched live; the kexec.
. "$SCRIPTS/common.sh"
exec >/dev/console 2>&1
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
mkdir -p "$STATE"
say "boot 1: $(uname -r), LUO device $(ls /dev/liveupdate)"
start_luod 1
say "three VMs: vm-a (64 MiB + 4 KiB, demo VMM, handover), vm-q (a real QEMU guest, 64 MiB, luod-qemu), vm-c (16 MiB, demo VMM, delegation)"
luod-demo-vmm run --id vm-a --ram ram0=64M --ram state=4K --record "$SHARE/vm-a.json" >"$SHARE/vm-a-run.log" 2>&1 &
luod-demo-vmm run --id vm-c --mode delegation --ram ram0=16M --record "$SHARE/vm-c.json" >"$SHARE/vm-c-run.log" 2>&1 &
ARGS=$(python -m tests.vm.l2guest floppy "$SHARE/floppy.img")  # a boot sector that counts in RAM
luod-qemu run --id vm-q --ram 64M --report "$SHARE/vm-q-report.jsonl" -- $ARGS >"$SHARE/vm-q-run.log" 2>&1 &
wait_for "$SHARE/vm-a-run.log" handed-over
wait_for "$SHARE/vm-c-run.log" subscribed
wait_for "$SHARE/vm-q-run.log" '"preserved"'
say "vm-q: $(qemu-system-x86_64 --version | head -1), its guest counting in its RAM"
for _ in $(seq 1 300); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done
say "luoctl status"; luoctl status
say "luoctl vms"; luoctl vms
say "luoctl preflight --kernel $NEXT_KERNEL --reuse-cmdline"
luoctl preflight --kernel "$NEXT_KERNEL" --reuse-cmdline || exit 1
say "vm-q just before the update (a pattern written into its RAM, which the guest never touches)"
python -m tests.vm.l2guest twice /run/luod-qemu/vm-q.json "$SHARE/vm-q-before.json" "$SHARE/vm-q-running.json" --write-pattern
say "luoctl update watch, then luoctl update start --reuse-cmdline (the VMMs write until FREEZE)"
luoctl update watch | tee /tmp/watch.txt &
for _ in $(seq 1 300); do [ -s /tmp/watch.txt ] && break; sleep 0.1; done
luoctl update start --kernel "$NEXT_KERNEL" --reuse-cmdline --deadline freezing=20 || exit 1
wait
echo "the update did not kexec"; exit 1
