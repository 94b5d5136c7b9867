"""Update events (PHASE, VM_PROGRESS, UPDATE_END) to whoever follows them: listeners in this
process (systemd's STATUS=, the REST API's stream) and VMM connections that sent WATCH."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from luod.daemon.connections import VmmConnection
from luod.errors import LuodError
from luod.vmm import codec

log = structlog.get_logger("luod.events")

Listener = Callable[[dict[str, Any]], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._watchers: set[VmmConnection] = set()

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def watch(self, conn: VmmConnection) -> None:
        self._watchers.add(conn)

    def unwatch(self, conn: VmmConnection) -> None:
        self._watchers.discard(conn)

    def stopping(self) -> None:
        """luod stops: listeners get SHUTDOWN, the last event (VMM watchers see the socket
        close, as before)."""
        for listener in self._listeners:
            listener({"event": "SHUTDOWN", "reason": "luod is stopping"})

    def publish(self, message: dict[str, Any]) -> None:
        for listener in self._listeners:
            listener(message)
        if not self._watchers:
            return
        try:
            frame = codec.encode(message)
        except LuodError:  # too large for a frame: watchers miss it, the update goes on
            log.error("event-too-large", event=message.get("event"))
            return
        for conn in list(self._watchers):
            if conn.closed:
                self._watchers.discard(conn)
            else:
                conn.push(frame)
