# Boot 1: luod and three demo VMMs (two hand their RAM over, one delegates), then the play:
# luod_update kexecs into the next kernel, which ends this boot (and ansible-playbook) for good.
. "$SCRIPTS/common.sh"
. "$FLEET/common.sh"
set -x
luod_up 1
for vm in vm-a vm-b; do
    luod-demo-vmm run --id $vm --ram ram0=16M --ram state=4K --record "$SHARE/$vm.json" \
        >"$SHARE/$vm-run.log" 2>&1 &
done
luod-demo-vmm run --id vm-c --mode delegation --ram ram0=8M --record "$SHARE/vm-c.json" \
    >"$SHARE/vm-c-run.log" 2>&1 &
wait_for "$SHARE/vm-a-run.log" handed-over
wait_for "$SHARE/vm-b-run.log" handed-over
wait_for "$SHARE/vm-c-run.log" subscribed
api_up
uname -r >"$SHARE/release-1"
play 1
echo "the play returned instead of kexecing (exit $?)"; cat "$SHARE/play-1.log"; exit 1
