"""Update events for REST subscribers: a fan-out hub, and their Server-Sent Events encoding.

``publish`` is called from the daemon's ``notify`` on luod's main event loop and never blocks.
Each subscriber reads on its own loop (the REST thread's, luod.rest.thread): the event is handed
over with ``call_soon_threadsafe``, so the subscriber's queue is only ever touched by its own
loop. A subscriber that falls ``LIMIT`` events behind is dropped (its stream ends, so the client
knows to reconnect) rather than slowing the update or growing without bound.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Final

LIMIT: Final = 1024
_END: Final[dict[str, Any]] = {}  # sentinel: the stream is over


class Subscription:
    """One subscriber's queue; an async iterator of event dicts (implements EventStream)."""

    def __init__(self, hub: EventHub, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self._hub = hub
        self.loop = loop  # the reader's: the only loop that touches the queue
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
        """On the reader's loop."""
        if self.closed:
            return
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
        self._lock = threading.Lock()  # subscribers come and go on the REST thread

    def subscribe(self, loop: asyncio.AbstractEventLoop | None = None) -> Subscription:
        """A subscription read on ``loop`` (default: the running one); it receives every event
        published after this returns."""
        subscription = Subscription(self, self.limit, loop or asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(subscription)
        return subscription

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            self._hand_over(subscription, event)

    def _hand_over(self, subscription: Subscription, event: dict[str, Any]) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is subscription.loop:
            subscription.offer(event)
            return
        try:
            subscription.loop.call_soon_threadsafe(subscription.offer, event)
        except RuntimeError:  # its loop is closed: the REST thread is gone
            subscription.closed = True
            self.discard(subscription)

    def discard(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    def __len__(self) -> int:
        return len(self._subscribers)


def sse(event: dict[str, Any], name: str | None = None) -> bytes:
    """One Server-Sent Event: ``event:`` is the luod event name, ``data:`` the JSON (one line)."""
    kind = name or str(event.get("event", "message"))
    data = json.dumps(event, separators=(",", ":"), sort_keys=True)
    return f"event: {kind}\ndata: {data}\n\n".encode()


KEEPALIVE: Final = b": keepalive\n\n"
