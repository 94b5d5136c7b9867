"""What one luod-qemu runs: its VM, luod's socket, timeouts, and the QEMU command (luod.qemu.cli
reads them from the command line; the supervisor and the lifecycle steps use them)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from luod.qemu.files import VmSpec


class Options(NamedTuple):
    vm: str
    socket: str
    runtime_dir: Path
    qmp_timeout: float
    start_timeout: float  # QEMU's start, up to its monitor's greeting
    spec: VmSpec | None  # from the command line (``run``); None: ``restore`` only
    qemu: str | None  # a QEMU binary given on the command line: overrides the preserved one
    report: Path | None
    wait_for_luod: float = 0.0  # seconds to wait for luod's socket at start (luod starting)
