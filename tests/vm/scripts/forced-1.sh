# Boot 1 (7.2.13): a memfd preserved, then the kexec into the abi-v6 kernel forced past luod
# with the raw syscalls (kexec_file_load, reboot(KEXEC)). The next kernel panics at boot.
# Set by the test: ABI_V6_KERNEL.
. "$SCRIPTS/common.sh"
set -x
python -m tests.vm.scripts.force_kexec "$ABI_V6_KERNEL"
echo "the forced kexec returned: $?"; exit 1
