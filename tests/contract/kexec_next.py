"""The kexec between two real-kernel contract boots (runs in the pytest process that holds the
carried session fds)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from luod.kernel import LuoError, kernel_backend


def kexec_into_next_boot() -> None:
    backend = kernel_backend()
    kernel = Path(os.environ["LUOD_NEXT_KERNEL"])
    cmdline = Path("/proc/cmdline").read_text().strip()
    try:
        backend.load_kernel(kernel, cmdline=cmdline)
        # A test may have hit EEXIST at a 51-session boundary on purpose; a create+close
        # restores a valid block chain (docs/kernel.md §4.4) so the next boot does not panic.
        backend.device.create_session("luod-test-eexist-guard").close()
        os.sync()
        print("contract: kexec into the next boot", flush=True)
        backend.reboot_kexec()
    except LuoError as exc:
        print(f"contract: kexec failed: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(99) from exc
