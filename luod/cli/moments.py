"""API times (RFC 3339, UTC, luod's realtime clock) as seconds since the epoch: one reader for
luoctl's renderers (luod.cli.render, luod.cli.live)."""

from __future__ import annotations

from datetime import datetime


def epoch(moment: str) -> float:
    """Seconds since the epoch of an API time (RFC 3339, UTC)."""
    return datetime.fromisoformat(moment).timestamp()
