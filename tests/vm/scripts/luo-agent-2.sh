# Boot 2: each luo-agent client CLAIMs its session, retrieves its memfd, FINISHes and compares
# the sha256 with what it recorded before its READY. No DONE: its CLAIM ends the VM for luod.
STATE=$SHARE/luod-state
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
start_luod 2
AGENT="$SCRIPTS/../luo_agent_client.py"
status=0
for id in agent-8 agent-32; do
    /usr/bin/python3 -I "$AGENT" claim --id "$id" --record "$SHARE/$id.json" \
        >"$SHARE/$id-claim.log" 2>&1 || status=1
done
luod_list >"$SHARE/list-after-claim.json"
python -m tests.vm.scripts.luoctl history >"$SHARE/history.json"
exit $status
