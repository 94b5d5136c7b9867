"""The process's fd table, grown once at start.

The kernel doubles a process's fd table as fds are opened (64, 128, … slots). In a process with
more than one thread each doubling waits for an RCU grace period, milliseconds each: luod with
1000 sessions (its own fd and custody's copy of each) met five of them in its recovery, with a
thread already running, about 150 ms on a loaded host for 3000 fds against under 1 ms in a
single thread (bench/NOTES.md). Growing the table to its final size while luod has one thread
costs one copy and no wait.

Before that, ``raise_limit`` lifts the soft RLIMIT_NOFILE to the hard one. Each VM costs luod a
session fd, custody's copy (in ``memory`` custody) and its VMM's connection; under the usual soft
limit of 1024 (a shell, an init without ``LimitNOFILE=``) luod ran out at about 200 VMs on the
simulator (and would at about 340 on a kernel), where the kernel carries 1000 and more. luod
waits on epoll, not select(2), so fds past 1023 are fine: the soft limit of 1024 exists for
programs that use select(2) (systemd raises only the hard limit by default for that reason).
"""

from __future__ import annotations

import fcntl
import os
import resource
from typing import Final

RESERVED: Final = 4096
"""1000 sessions (the kernel's practical limit) with custody's copies, VMM connections and the
fds of a reclaim in flight: 32 KiB of fd table."""


def raise_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard limit (as the keeper does); the soft limit
    now in force. Unchanged where the hard limit is unlimited or the raise is refused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft


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
