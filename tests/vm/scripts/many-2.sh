# Boot 2 of tests/vm/test_many_vms.py: luod takes the 400 sessions back; every VM reclaims at
# once, checks its memory and sends DONE.
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
CUSTODY=memory start_luod 2
python "$SCRIPTS/many_vms.py" reclaim 400 "$SOCK" "$STATE" "$SHARE/many-verdict.json"
