"""Heap that luod freed, given back to the system (glibc's ``malloc_trim``).

A hostile or just large request (a 64 KiB line, a history page, a preflight) leaves freed
memory that glibc keeps in the process: luod's RSS stayed at its high-water mark, 90 MiB over
its start after 10^5 fuzzed messages although nothing was kept (tracemalloc: only lazily
imported modules). luod hands it back when a VMM hangs up and when an update ends, at most
once per INTERVAL. Elsewhere than glibc this does nothing. The call goes through the kernel
layer's cffi libc, loaded at luod's start (ctypes, imported at the first hang-up, cost ~2 ms of
the event loop and opened its files for a moment)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from luod.kernel import libc

INTERVAL: Final = 1.0  # seconds; malloc_trim walks the heap: ~1 ms for luod's
_last = float("-inf")
trim: Callable[[], bool | None] = libc.malloc_trim


def give_back() -> bool:
    """Trim the heap unless that was done less than INTERVAL ago or the C library cannot;
    True when it ran."""
    global _last
    now = time.monotonic()
    if now - _last < INTERVAL:
        return False
    _last = now
    return trim() is not None
