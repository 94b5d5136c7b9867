# The fleet tier's stages in the LUO test VM (sourced after tests/vm/scripts/common.sh).
STATE=$SHARE/luod-state  # persistent across the kexec, like /var/lib/luod
export LC_ALL=C.UTF-8 HOME=/tmp/ansible-home
export ANSIBLE_COLLECTIONS_PATH=$REPO/packaging ANSIBLE_LOCAL_TEMP=/tmp/ansible-local
export ANSIBLE_REMOTE_TEMP=/tmp/ansible-remote ANSIBLE_NOCOLOR=1 ANSIBLE_HOST_KEY_CHECKING=0
export ANSIBLE_PYTHON_INTERPRETER=$VENV/bin/python ANSIBLE_PIPELINING=1
export ANSIBLE_CALLBACK_PLUGINS=$REPO/tests/fleet/callback_plugins ANSIBLE_CALLBACKS_ENABLED=fleet_record
mkdir -p "$HOME" "$STATE"

play() {  # play BOOT: the play of this tier, through a local connection
    FLEET_RECORD=$SHARE/record-$1.jsonl ansible-playbook -i localhost, -c local \
        "$FLEET/play.yml" -e "next_kernel=$NEXT_KERNEL" >"$SHARE/play-$1.log" 2>&1
}

api_up() {
    for _ in $(seq 1 600); do [ -S /run/luod/api.sock ] && return 0; sleep 0.1; done
    echo "luod's REST API did not come up"; exit 1
}

luod_up() {  # luod_up BOOT: start_luod, again if it died starting: on a loaded TCG host its
    # keeper can take longer than luod waits for it (custody-unavailable), and luod takes
    # nothing (no session retrieved) before custody exists, so a second start is safe.
    for attempt in 1 2 3; do
        (start_luod "$1-$attempt") && return 0
        echo "luod did not come up (attempt $attempt)"
    done
    exit 1
}
