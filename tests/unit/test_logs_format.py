"""luod's own log processors (luod.daemon.logs) write what structlog's TimeStamper(fmt="iso",
utc=True) and JSONRenderer(sort_keys=True) wrote: the same keys, values and order, in less
time (every RECLAIM and DONE logs a line)."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest
from structlog.processors import JSONRenderer

from luod.daemon import logs


class Custom:
    def __structlog__(self) -> str:
        return "custom!"


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


EVENTS: list[dict[str, Any]] = [
    {"event": "vm-reclaimed", "vm": "vm12", "files": ["ram0", "state-1"], "cgroup": "/"},
    {"event": "kexec", "handoff_ms": 2.076, "sync_ms": 0.211, "vms": 100, "custody": "memory"},
    {"event": "odd", "path": "/tmp/é\u2028x", "obj": Opaque(), "custom": Custom(), "none": None},
    {"zeta": 1, "alpha": {"b": 2, "a": [1, 2.5, True]}, "event": "nested"},
]


@pytest.mark.parametrize("event", EVENTS)
def test_the_line_is_structlogs_line(event: dict[str, Any]) -> None:
    assert logs.render(None, "info", dict(event)) == JSONRenderer(sort_keys=True)(
        None, "info", dict(event)
    )


def test_the_stamp_is_utc_iso_with_microseconds_and_z() -> None:
    before = time.time()
    text = logs.stamp(None, "info", {})["timestamp"]
    after = time.time()
    assert text.endswith("Z") and len(text) == len("2026-12-07T09:14:51.852333Z")
    parsed = datetime.datetime.fromisoformat(text)
    assert parsed.tzinfo == datetime.UTC
    assert before - 1e-6 <= parsed.timestamp() <= after + 1e-6


def test_the_stamp_follows_the_clock_across_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    for now, expected in (
        (1796636091.5, "2026-12-07T09:34:51.500000Z"),
        (1796636091.999999, "2026-12-07T09:34:51.999999Z"),
        (1796636092.000002, "2026-12-07T09:34:52.000002Z"),  # a new second, a new prefix
        (1796636031.25, "2026-12-07T09:33:51.250000Z"),  # the clock set back
        (1796636031.0, "2026-12-07T09:33:51.000000Z"),  # microseconds even when zero
    ):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        got = logs.stamp(None, "info", {})["timestamp"]
        assert got == expected
        whole = datetime.datetime.fromtimestamp(now, datetime.UTC)
        assert abs(datetime.datetime.fromisoformat(got) - whole).total_seconds() < 2e-6
