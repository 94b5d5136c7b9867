# Boot 1 of test_qemu_systemd_guest: a real QEMU guest (sid's QEMU, the boot-sector counter of
# l2guest.py) runs as luod-qemu@l2.service; a pattern goes into its RAM; then the live update
# (kexec.mode auto: systemctl kexec). luod-qemu's report is on the share (a BindPaths drop-in).
. "$SHARE/lib.sh"
set -x
L2="python3 $SHARE/l2guest.py"
luod_up
$L2 floppy "$SHARE/floppy.img"
systemctl start luod-qemu@l2.service
for _ in $(seq 1 1200); do
    journalctl -b -u luod-qemu@l2.service -o cat | grep -q '"preserved"' && break
    sleep 0.1
done
$L2 twice /run/luod-qemu/l2.json "$SHARE/l2-before.json" "$SHARE/l2-running.json" --write-pattern
luoctl --json vms >"$SHARE/vms-before.json"
# l2's VMM runs in luod-qemu@l2.service, apart from luod: preflight's cgroup-migrations check,
# beside the cgroup v2 mount it reads
luoctl --json preflight --kernel "$NEXT_KERNEL" --reuse-cmdline >"$SHARE/preflight-1.json" || true
grep ' - cgroup2 ' /proc/self/mountinfo >"$SHARE/cgroup2-mount.txt"
journalctl -b -u luod-qemu@l2.service -o cat --no-pager >"$SHARE/l2-journal-1.txt"
start_update
sleep 600  # the kexec stops this unit
