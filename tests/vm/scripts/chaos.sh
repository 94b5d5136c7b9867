# A boot of the chaos matrix (tests/vm/test_chaos.py): BOOT and POINTS are set by the test.
# One Python process drives it (tests/vm/scripts/chaos_guest.py).
STATE=$SHARE/luod-state  # persistent, like /var/lib/luod: history spans boots
. "$SCRIPTS/common.sh"
set -x
mkdir -p "$STATE"
printf '[kexec]\nrunning_image = "%s"\n' "$NEXT_KERNEL" >/run/luod-vm.toml
python -m tests.vm.scripts.chaos_guest "$BOOT" "$SHARE" "$STATE" "$NEXT_KERNEL" "$POINTS"
