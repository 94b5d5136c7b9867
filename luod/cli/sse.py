"""Server-Sent Events parsing, pure: lines in, events (name, JSON data, id) out.

Only what luod sends is needed (``id:``, ``event:``, one ``data:`` line, ``retry:``, comments),
but multi-line data and unnamed events are handled as the SSE specification says.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Event(NamedTuple):
    name: str
    data: dict[str, Any]
    id: str | None = None  # the stream's last event id (resume with Last-Event-ID)


@dataclass
class EventParser:
    name: str = ""
    data: list[str] = field(default_factory=list)
    last_id: str | None = None
    retry_ms: int | None = None

    def feed(self, line: str) -> Event | None:
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
        elif key == "id" and "\0" not in value:
            self.last_id = value
        elif key == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        name, data = self.name or "message", "\n".join(self.data)
        self.name, self.data = "", []
        if not data:
            return None
        parsed = json.loads(data)
        return Event(name, parsed if isinstance(parsed, dict) else {"data": parsed}, self.last_id)


def events(lines: Iterable[str], parser: EventParser | None = None) -> Iterator[Event]:
    parser = parser or EventParser()
    for line in lines:
        event = parser.feed(line.rstrip("\r\n"))
        if event is not None:
            yield event
