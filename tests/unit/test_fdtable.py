"""luod grows its fd table once, at start (luod.kernel.fdtable): 1000 sessions then never wait
for the kernel's doublings, each an RCU grace period in a process with threads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from luod.kernel import fdtable
from tests.integration.conftest import start_daemon

FD_SIZE = "import re; print(re.search(r'FDSize:\\s+(\\d+)', open('/proc/self/status').read())[1])"


def _fd_table_size(before: str) -> int:
    code = f"{before}\n{FD_SIZE}"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout)  # fmt: skip


def test_reserve_grows_the_fd_table_to_the_count() -> None:
    assert _fd_table_size("") < 4096
    grown = _fd_table_size("from luod.kernel import fdtable; assert fdtable.reserve(4096) == 4096")
    assert grown >= 4096


def test_reserve_stays_within_the_fd_limit() -> None:
    limited = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))\n"
    assert _fd_table_size(f"{limited}from luod.kernel import fdtable; fdtable.reserve(4096)") >= 512
    code = f"{limited}from luod.kernel import fdtable; print(fdtable.reserve(4096))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "512"


def test_a_running_luod_has_its_table_grown(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path / "luod")
    try:
        status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    finally:
        daemon.stop()
    size = re.search(r"FDSize:\s+(\d+)", status)
    assert size is not None, status
    assert int(size[1]) >= fdtable.RESERVED
