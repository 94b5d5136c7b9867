"""Time as luod records it: realtime (wall), monotonic (deadlines), boottime (spans kexec math).

A fake clock in tests drives deadlines without sleeping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Stamp:
    realtime: float
    monotonic: float
    boottime: float

    def to_dict(self) -> dict[str, float]:
        """As ``dataclasses.asdict`` would, without its deep copy (10x slower; every step of
        every VM in an update's record is stamped)."""
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
