"""The REST worker gives up the capabilities it does not need, before it imports the HTTP stack.

luod runs as root with what LUO needs (luod.service: CAP_SYS_BOOT for the kexec, CAP_KILL,
CAP_SYS_RESOURCE...). Its REST worker parses whatever a TCP client sends; should that parser be
subverted, it must not be able to load and boot a kernel (the end of every guest) or signal
other users' processes. It keeps ``KEPT``: CAP_CHOWN, to give the REST socket its group.

``no_new_privs`` comes first: for a process with uid 0, an ``execve`` would otherwise grant
every capability again (capabilities(7), "root"); with it, an exec never gains any
(luod.service sets NoNewPrivileges=yes, a host without systemd may not). Then capset(2) drops
the rest from the effective, permitted and inheritable sets. The bounding set stays as it is:
lowering it needs CAP_SETPCAP, which luod.service does not grant, and with no_new_privs it no
longer matters.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Final

CAP_CHOWN: Final = 0
KEPT: Final = frozenset({CAP_CHOWN})
PR_SET_NO_NEW_PRIVS: Final = 38
_VERSION_3: Final = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set


def drop(kept: frozenset[int] = KEPT) -> None:
    """Keep only ``kept`` (capability numbers) in this process; raises OSError if the kernel
    refuses (the worker then does not serve)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _error("prctl(PR_SET_NO_NEW_PRIVS)")
    header = (ctypes.c_uint32 * 2)(_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) for caps 0-31, 32-63
    if libc.capget(header, data) != 0:
        raise _error("capget")
    for word in (0, 1):
        mask = sum(1 << (cap - 32 * word) for cap in kept if cap // 32 == word)
        for field in range(3):
            data[3 * word + field] &= mask
    if libc.capset(header, data) != 0:
        raise _error("capset")


def _error(call: str) -> OSError:
    number = ctypes.get_errno() or errno.EPERM
    return OSError(number, f"{call}: {os.strerror(number)}")
