# Boot 1 of tests/vm/test_many_vms.py: luod started as a shell starts it (soft fd limit 1024),
# 400 VMs handed over at once, then luod's own KEXEC (prepare, freeze, reboot).
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
MANY=400
ulimit -n >"$SHARE/stage-soft-limit"
CUSTODY=memory start_luod 1
grep "Max open files" /proc/$LUOD_PID/limits >"$SHARE/luod-limits"
python "$SCRIPTS/many_vms.py" hand-over $MANY "$SOCK" >"$SHARE/many-hand.log" 2>&1 &
H=$!
until grep -q all-handed-over "$SHARE/many-hand.log"; do  # or the hand-over failed
    kill -0 $H 2>/dev/null || { cat "$SHARE/many-hand.log"; exit 1; }
    sleep 0.1
done
sync
python -c "from luod.vmm.client import Client; Client('$SOCK').kexec('$NEXT_KERNEL')" >"$SHARE/kexec.log" 2>&1
echo "kexec returned: $?"; cat "$SHARE/kexec.log"; exit 1
