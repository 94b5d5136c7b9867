"""Heap that luod freed, given back to the system (glibc's ``malloc_trim``).

A hostile or just large request (a 64 KiB line, a history page, a preflight) leaves freed
memory that glibc keeps in the process: luod's RSS stayed at its high-water mark, 90 MiB over
its start after 10^5 fuzzed messages although nothing was kept (tracemalloc: only lazily
imported modules). luod hands it back when a VMM hangs up and when an update ends, at most
once per INTERVAL. Elsewhere than glibc this does nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

INTERVAL: Final = 1.0  # seconds; malloc_trim walks the heap: ~1 ms for luod's
_last = float("-inf")
_trim: Callable[[int], int] | None = None
_resolved = False


def give_back() -> bool:
    """Trim the heap unless that was done less than INTERVAL ago; True when it ran."""
    global _last
    now = time.monotonic()
    trim = _malloc_trim()
    if trim is None or now - _last < INTERVAL:
        return False
    _last = now
    trim(0)
    return True


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _resolved
    if not _resolved:
        _resolved = True
        import ctypes  # at the first trim (a VMM's hang-up), not at luod's start: ~2 ms

        try:
            _trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc
            _trim = None
    return _trim
