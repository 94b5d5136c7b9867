# Boot 1: luod, and two real QEMU guests under luod-qemu: l2 (the boot-sector counter of
# tests/vm/l2guest.py, with a pattern written into its RAM) and lx (a small Linux guest,
# tests/vm/l2linux.py: its uptime and a counter in its memory); then the live update (direct
# kexec).
MANAGED_BRIDGES='"br-l2"'  # l2's tap sits on it; luod rebuilds both after the kexec
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
ip link add br-l2 type bridge
ip tuntap add dev l2-tap0 mode tap vnet_hdr
ip link set l2-tap0 address 52:54:00:0c:00:01 master br-l2 up
ip link set br-l2 up
start_luod 1
L2="python -m tests.vm.l2guest"
ARGS=$($L2 floppy "$SHARE/floppy.img")
ARGS="$ARGS -netdev tap,id=n0,ifname=l2-tap0,script=no,downscript=no"
ARGS="$ARGS -device e1000,netdev=n0,mac=52:54:00:12:34:56,romfile="
luod-qemu run --id l2 --ram 64M --report "$SHARE/l2-report.jsonl" -- $ARGS \
    >"$SHARE/l2-run-1.log" 2>&1 &
LX="python -m tests.vm.l2linux"
LXARGS=$($LX initrd "$SHARE/lx-initrd.gz" "$NEXT_KERNEL" "$SHARE/lx-console.log")
luod-qemu run --id lx --ram 64M --report "$SHARE/lx-report.jsonl" -- $LXARGS \
    >"$SHARE/lx-run-1.log" 2>&1 &
wait_for "$SHARE/l2-run-1.log" '"preserved"'
wait_for "$SHARE/lx-run-1.log" '"preserved"'
$L2 twice /run/luod-qemu/l2.json "$SHARE/l2-before.json" "$SHARE/l2-running.json" --write-pattern
$LX twice /run/luod-qemu/lx.json "$SHARE/lx-before.json" "$SHARE/lx-running.json"
luod_list >"$SHARE/list-before.json"
cat /sys/class/net/l2-tap0/carrier >"$SHARE/l2-carrier-1"  # 1: QEMU has the tap open
ip -d -j link show dev l2-tap0 >"$SHARE/l2-tap-before.json"
sync
python -c "from luod.vmm.client import Client; Client('$SOCK').kexec('$NEXT_KERNEL')" >"$SHARE/kexec.log" 2>&1
echo "kexec returned: $?"; cat "$SHARE/kexec.log"; cat "$SHARE/l2-run-1.log" "$SHARE/lx-run-1.log"; exit 1
