"""structlog configured for JSON lines on stderr (journald keeps them as they are).

Every RECLAIM and DONE logs a line, and so does each step of an update, inside the VMs' pause:
the stamp and the JSON are luod's own (``stamp``, ``render``), which take about half of what
structlog's ``TimeStamper`` and ``JSONRenderer`` do (a datetime made per line; ``json.dumps``
making an encoder per line), with the same keys and format. luod binds no context variables,
so ``merge_contextvars`` is not in the chain.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import structlog


@functools.lru_cache(maxsize=1)
def _date_and_time(second: int) -> str:
    """``second`` as "YYYY-MM-DDTHH:MM:SS" (UTC): made once a second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def stamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``timestamp``: now in UTC, ISO 8601 with microseconds and ``Z``."""
    second, micro = divmod(round(time.time() * 1e6), 1_000_000)  # rounded, as datetime does
    event["timestamp"] = f"{_date_and_time(second)}.{micro:06d}Z"
    return event


def _fallback(value: Any) -> Any:
    """What structlog's renderer does with a value JSON cannot take: its ``__structlog__()``,
    else its repr."""
    method = getattr(value, "__structlog__", None)
    return method() if method is not None else repr(value)


_ENCODER = json.JSONEncoder(sort_keys=True, default=_fallback)


def render(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """The line: keys sorted, as structlog's ``JSONRenderer(sort_keys=True)`` writes it."""
    return _ENCODER.encode(event)


_level = ["info"]


def level() -> str:
    """The level ``configure`` last set (the REST worker logs at luod's)."""
    return _level[0]


def configure(level: str = "info") -> None:
    _level[0] = level
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # one write(2) per line: PrintLogger's print() costs 3x more (a lock, two writes), and
        # each preserved file logs a line on the request's path (bench/preserve_cost.py)
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("luod")  # type: ignore[no-any-return]
