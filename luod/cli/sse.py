"""Server-Sent Events parsing, pure: lines in, (event name, JSON data) out.

Only what luod sends is needed (``event:``, one ``data:`` line, comments), but multi-line data
and unnamed events are handled as the SSE specification says.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EventParser:
    name: str = ""
    data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> tuple[str, dict[str, Any]] | None:
        """One line (without its newline); an event when a blank line completes one."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keepalive
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            self.name = value
        elif key == "data":
            self.data.append(value)
        return None

    def _dispatch(self) -> tuple[str, dict[str, Any]] | None:
        name, data = self.name or "message", "\n".join(self.data)
        self.name, self.data = "", []
        if not data:
            return None
        parsed = json.loads(data)
        return name, parsed if isinstance(parsed, dict) else {"data": parsed}


def events(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    parser = EventParser()
    for line in lines:
        event = parser.feed(line.rstrip("\r\n"))
        if event is not None:
            yield event
