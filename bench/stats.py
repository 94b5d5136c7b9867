"""Tiny timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter_ns()
    call()
    return (time.perf_counter_ns() - started) / 1e9


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def human(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "-"
    if seconds < 0:  # a span between two processes' stamps can be (a blackout budget's part 5)
        return "-" + human(-seconds)
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def signed(seconds: float) -> str:
    """``human`` with a sign: a difference of two medians can be negative."""
    return ("-" if seconds < 0 else "+") + human(abs(seconds))


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
