# Boot 2 of test_qemu_systemd_guest: luod-qemu@l2.service (enabled for this boot, after
# luod-ready.target) restored the guest; probe it, then stop the unit (the VM is released).
. "$SHARE/lib.sh"
set -x
L2="python3 $SHARE/l2guest.py"
luod_up
wait_for "$SHARE/luod-qemu/l2.jsonl" '"restored"' 1800
$L2 twice /run/luod-qemu/l2.json "$SHARE/l2-after-1.json" "$SHARE/l2-after-2.json"
for _ in $(seq 1 1200); do
    journalctl -b -u luod-qemu@l2.service -o cat | grep -q '"preserved"' && break
    sleep 0.1
done
systemctl show -P ActiveState luod-qemu@l2.service >"$SHARE/l2-active.txt"
journalctl -b -u luod-qemu@l2.service -o cat --no-pager >"$SHARE/l2-journal-2.txt"
luoctl --json vms >"$SHARE/vms-after.json"
luoctl --json history >"$SHARE/history.json"
luod_journal luod-journal-2.txt  # the update has ended: the retrieve helper retired
systemctl stop luod-qemu@l2.service
luoctl --json vms >"$SHARE/vms-stopped.json"
