# Boot 1 (7.2.13): the abi-v6 kernel is refused (preflight, then update start, which never
# kexecs: the VMM keeps running); then a live update into 7.3.4.
# Set by the test: RUNNING_KERNEL (7.2.13), NEXT_KERNEL (7.3.4), ABI_V6_KERNEL.
STATE=$SHARE/luod-state  # persistent: the history spans the boots
CUSTODY=memory  # luod alone holds the sessions: one process fewer to start per boot
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
uname -rv >"$SHARE/uname-1"
start_luod 1
luod-demo-vmm run --id vm-a --ram ram0=4M --ram state=4K --record "$SHARE/vm-a.json" \
    >"$SHARE/vm-a-run.log" 2>&1 &
VMM=$!
wait_for "$SHARE/vm-a-run.log" handed-over
for _ in $(seq 1 600); do [ -S /run/luod/api.sock ] && break; sleep 0.1; done

luoctl --json preflight --kernel "$ABI_V6_KERNEL" --reuse-cmdline >"$SHARE/preflight-v6.json"
echo $? >"$SHARE/preflight-v6.rc"
luoctl update start --kernel "$ABI_V6_KERNEL" --reuse-cmdline >"$SHARE/start-v6.txt" 2>&1
echo $? >"$SHARE/start-v6.rc"
# had it gone ahead, the VMM would be frozen by now; the refusal is in the history
kill -0 "$VMM" && echo alive >"$SHARE/vm-a-after-v6"
python -c "from luod.vmm.client import Client; import json; c = Client('$SOCK'); \
print(json.dumps({'vms': c.list(), 'history': c.history()}))" >"$SHARE/after-v6.json"

# 7.3.4 and back, qualified (issue 14 §1): canaries beside vm-a (--with-vms), then an update
# whose preflight passes (recorded in the update), then the kexec; luod takes the step back
# into 7.2.13 itself, in boot 2. Without --with-vms it is refused: vm-a is preserved. The large
# canary is 16 MiB here (TCG hashes ~2 MiB/s: about 15 s per verify); make bench runs 256 MiB.
luoctl --json qualify start --chain "$RUNNING_KERNEL,$NEXT_KERNEL" >"$SHARE/qualify-novms.json"
echo $? >"$SHARE/qualify-novms.rc"
# --qemu-canary: a real QEMU guest (nested TCG, under luod-qemu) crosses both kexecs too.
luoctl --json qualify start --chain "$RUNNING_KERNEL,$NEXT_KERNEL,$RUNNING_KERNEL" --with-vms \
    --qemu-canary --large-mib "${QUALIFY_LARGE_MIB:-16}" --many-files 70 --sessions 4 \
    >"$SHARE/update-1.txt" 2>&1 || { cat "$SHARE/update-1.txt"; exit 1; }
wait
echo "the update returned instead of kexecing"; exit 1
