"""When luod's process started, in seconds since the kernel started: /proc/self/stat's
``starttime`` (clock ticks). After a kexec it splits "the new kernel's boot until luod runs"
into the boot's part (until luod's exec) and luod's own start-up (interpreter and imports)."""

from __future__ import annotations

import os
from pathlib import Path


def since_boot(stat: Path = Path("/proc/self/stat")) -> float | None:
    """None when /proc cannot say (not Linux, no /proc mounted)."""
    try:
        fields = stat.read_text().rpartition(")")[2].split()  # the name may hold spaces
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc_pid_stat(5)
    except (OSError, ValueError, IndexError):
        return None
