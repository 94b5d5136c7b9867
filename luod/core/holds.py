"""Test holds: ``LUOD_TEST_HOLD=point[=seconds],...`` makes luod wait at a named point (phases
``preparing``, ``prepared``, ``frozen``; ``reboot``, the handover written, just before the reboot
syscall; ``recovery``, before the sessions are taken back) so a
test can kill it exactly there (the chaos matrix, tests/vm/test_chaos.py). Unset in production;
luod logs ``test-hold`` whenever one applies."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Final

import structlog

ENV: Final = "LUOD_TEST_HOLD"
POINTS: Final = frozenset({"preparing", "prepared", "frozen", "reboot", "recovery"})
DEFAULT_SECONDS: Final = 600.0
log = structlog.get_logger("luod.holds")


def seconds(point: str) -> float:
    """How long to hold at ``point`` (0: not asked)."""
    for item in os.environ.get(ENV, "").split(","):
        name, _, value = item.strip().partition("=")
        if name == point and point in POINTS:
            return float(value) if value else DEFAULT_SECONDS
    return 0.0


async def hold(point: str) -> None:
    if wait := seconds(point):
        log.warning("test-hold", point=point, seconds=wait, env=ENV)
        await asyncio.sleep(wait)


def hold_blocking(point: str) -> None:
    if wait := seconds(point):
        log.warning("test-hold", point=point, seconds=wait, env=ENV)
        time.sleep(wait)
