"""What luod-qemu tells: one JSON object per line on stdout (the journal, under systemd), and
the per-VM results (``frozen`` before the kexec, ``restored`` after it) also appended to the
``--report`` file. Step times are seconds from the step's origin, measured with
``time.perf_counter``; origins are wall-clock (``time.time``), the only clock that compares across
a kexec."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPORTED = frozenset({"frozen", "restored", "freeze-failed", "restore-failed"})


class Log:
    def __init__(self, vm: str, report: Path | None) -> None:
        self.vm = vm
        self.report = report

    def say(self, event: str, **fields: Any) -> dict[str, Any]:
        line = {"event": event, "vm": self.vm, "at": round(time.time(), 6), **fields}
        text = json.dumps(line)
        print(text, flush=True)
        if self.report is not None and event in REPORTED:
            self.report.parent.mkdir(parents=True, exist_ok=True)
            with self.report.open("a") as out:  # on disk before a kexec may follow
                out.write(text + "\n")
                out.flush()
                os.fsync(out.fileno())
        return line


class Clock:
    """Named steps, in seconds since the clock started (or since ``origin``, a wall time)."""

    def __init__(self, origin: float | None = None) -> None:
        now_wall, now = time.time(), time.perf_counter()
        self.realtime = now_wall if origin is None else origin
        self._start = now - (now_wall - self.realtime)
        self.steps: dict[str, float] = {}

    def mark(self, step: str) -> float:
        self.steps[step] = round(time.perf_counter() - self._start, 6)
        return self.steps[step]

    def wall(self, step: str) -> float:
        return self.realtime + self.steps[step]


def process_start() -> float:
    """Wall time at which this process was exec'd (its imports count as its own time):
    ``/proc/self/stat`` gives it in clock ticks of the boot clock."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return time.time()
    started = ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started)


def err(text: str) -> None:
    print(f"luod-qemu: {text}", file=sys.stderr, flush=True)
