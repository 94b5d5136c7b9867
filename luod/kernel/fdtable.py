"""The process's fd table, grown once at start.

The kernel doubles a process's fd table as fds are opened (64, 128, … slots). In a process with
more than one thread each doubling waits for an RCU grace period, milliseconds each: luod with
1000 sessions (its own fd and custody's copy of each) met five of them in its recovery, with a
thread already running, about 150 ms on a loaded host for 3000 fds against under 1 ms in a
single thread (bench/NOTES.md). Growing the table to its final size while luod has one thread
costs one copy and no wait.
"""

from __future__ import annotations

import fcntl
import os
import resource
from typing import Final

RESERVED: Final = 4096
"""1000 sessions (the kernel's practical limit) with custody's copies, VMM connections and the
fds of a reclaim in flight: 32 KiB of fd table."""


def reserve(count: int = RESERVED) -> int:
    """Grow this process's fd table to ``count`` slots (at most RLIMIT_NOFILE), now. Call it
    before any thread starts. Returns the slots reserved (0: the limit is too low to bother)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = min(count, soft) - 1
    if top < 64:
        return 0
    probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:  # the lowest free fd >= top (never one that is open): the table then fits it
        os.close(fcntl.fcntl(probe, fcntl.F_DUPFD_CLOEXEC, top))
    except OSError:
        return 0
    finally:
        os.close(probe)
    return top + 1
