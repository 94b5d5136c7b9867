"""Preserve a memfd in a LUO session and kexec into KERNEL with the raw syscalls, past luod
and its preflight (what tests/vm/test_cross_version.py shows the preflight prevents)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from luod.kernel import kernel_backend, memfd


def main() -> int:
    backend = kernel_backend()
    session = backend.device.create_session("forced")
    ram = memfd.create("ram", 1 << 20)
    os.pwrite(ram.fileno(), b"guest memory" * 1000, 0)
    session.preserve(ram, 1)
    backend.load_kernel(Path(sys.argv[1]), cmdline=backend.info().cmdline)
    print("preserved 1 MiB in session 'forced', kexec_file_load done: reboot(KEXEC)", flush=True)
    os.sync()
    backend.reboot_kexec()  # returns only by raising
    return 1


if __name__ == "__main__":
    sys.exit(main())
