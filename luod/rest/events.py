"""Update events for REST subscribers: a fan-out hub, and their Server-Sent Events encoding.

``publish`` is called from the daemon's ``notify`` on the event loop and never blocks: a
subscriber that falls ``LIMIT`` events behind is dropped (its stream ends, so the client
knows to reconnect) rather than slowing the update or growing without bound.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

LIMIT: Final = 1024
_END: Final[dict[str, Any]] = {}  # sentinel: the stream is over


class Subscription:
    """One subscriber's queue; an async iterator of event dicts (implements EventStream)."""

    def __init__(self, hub: EventHub, limit: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(limit)
        self.closed = False
        self.dropped = False  # fell behind and was cut off

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        """A plain method, not a generator, so a caller may time it out without ending it."""
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is _END:
            raise StopAsyncIteration
        return event

    def offer(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True
            self._end()

    def close(self) -> None:
        if not self.closed:
            self._end()

    def _end(self) -> None:
        self.closed = True
        self._hub.discard(self)
        while not self._queue.empty() and self.dropped:
            self._queue.get_nowait()  # a dropped subscriber gets the end, not stale events
        if not self._queue.full():
            self._queue.put_nowait(_END)


class EventHub:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._subscribers: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        subscription = Subscription(self, self.limit)
        self._subscribers.add(subscription)
        return subscription

    def publish(self, event: dict[str, Any]) -> None:
        for subscription in list(self._subscribers):
            subscription.offer(event)

    def discard(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def __len__(self) -> int:
        return len(self._subscribers)


def sse(event: dict[str, Any], name: str | None = None) -> bytes:
    """One Server-Sent Event: ``event:`` is the luod event name, ``data:`` the JSON (one line)."""
    kind = name or str(event.get("event", "message"))
    data = json.dumps(event, separators=(",", ":"), sort_keys=True)
    return f"event: {kind}\ndata: {data}\n\n".encode()


KEEPALIVE: Final = b": keepalive\n\n"
