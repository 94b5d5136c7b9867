# Boot 1: two VMMs written only from luo-agent's README (tests/vm/luo_agent_client.py, run with
# python3 -I: nothing of luod on its path) subscribe, preserve their own memfds into the session
# fd luod sends with START_PRESERVATION, answer one READY each. With a freezing deadline of 3 s
# the update must reach the kexec: luod sends them no FREEZE and waits for no second READY.
STATE=$SHARE/luod-state  # persistent, like /var/lib/luod: the history spans the boots
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
start_luod 1
AGENT="$SCRIPTS/../luo_agent_client.py"
agent() {  # agent ID SIZE
    /usr/bin/python3 -I "$AGENT" run --id "$1" --size "$2" --record "$SHARE/$1.json" \
        >"$SHARE/$1-run.log" 2>&1 &
}
agent agent-8 8M
agent agent-32 32M
vms() { python -c "from luod.vmm.client import Client; print(len(Client('$SOCK').list()))"; }
for _ in $(seq 1 300); do [ "$(vms)" = 2 ] && break; sleep 0.1; done
python -c "from luod.vmm.client import Client; import json
print(json.dumps(Client('$SOCK').update('$NEXT_KERNEL', dry_run=True)))" >"$SHARE/preflight.json"
sync
python -m tests.vm.scripts.luoctl update --kernel "$NEXT_KERNEL" --freezing 3 >"$SHARE/update.json" 2>&1
echo "the update returned instead of kexecing"; cat "$SHARE/update.json"; exit 1
