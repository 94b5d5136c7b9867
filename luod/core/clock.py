"""Time as luod records it: realtime (wall), monotonic (deadlines), boottime (spans kexec math).

A fake clock in tests drives deadlines without sleeping.
"""

from __future__ import annotations

import time
from typing import NamedTuple, Protocol

from luod.values import Value


class _Stamp(NamedTuple):
    realtime: float
    monotonic: float
    boottime: float


class Stamp(Value, _Stamp):
    __slots__ = ()

    def to_dict(self) -> dict[str, float]:
        """The three clocks by name, built directly: every step of every VM in an update's
        record is stamped (``dataclasses.asdict`` was 10x slower)."""
        return {"realtime": self.realtime, "monotonic": self.monotonic, "boottime": self.boottime}


class Clock(Protocol):
    def now(self) -> Stamp: ...


class SystemClock:
    def now(self) -> Stamp:
        return Stamp(
            time.clock_gettime(time.CLOCK_REALTIME),
            time.clock_gettime(time.CLOCK_MONOTONIC),
            time.clock_gettime(time.CLOCK_BOOTTIME),
        )


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def now(self) -> Stamp:
        return Stamp(self.t, self.t, self.t)
