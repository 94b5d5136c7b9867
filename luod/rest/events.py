"""Update events for REST subscribers: a fan-out hub, and their Server-Sent Events encoding.

``publish`` is called as each event arrives (in luod's REST worker, from the link to luod,
luod.rest.link; in one process, from the daemon's event bus) and never blocks. Each subscriber
reads on its own loop; one of another thread gets the event with ``call_soon_threadsafe``, so
the subscriber's queue is only ever touched by its own loop. A subscriber that falls ``LIMIT``
events behind is dropped (its stream ends, so the client knows to reconnect) rather than slowing
the update or growing without bound.

Every event gets an id (``EPOCH-N``: this hub's start, then a count), and the hub keeps the last
``LIMIT`` events: a client reconnecting with ``Last-Event-ID`` gets every event after that id
that the hub still holds (``subscribe(last_id=...)``). A new REST worker has a new hub: ids of
the one before match nothing, so a reconnecting client gets the state first. A ``SHUTDOWN``
event (luod is stopping) is the last one each subscriber gets: its stream ends right after it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

LIMIT: Final = 1024
RETRY_MS: Final = 2000
"""What the stream tells clients to wait before they reconnect (its ``retry:`` field)."""
SHUTDOWN: Final = "SHUTDOWN"
Item = tuple[str, dict[str, Any]]  # (event id, event)
_END: Final[Item] = ("", {})  # sentinel: the stream is over


class Subscription:
    """One subscriber's queue; an async iterator of event dicts (implements EventStream)."""

    def __init__(self, hub: EventHub, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        self._hub = hub
        self.loop = loop  # the reader's: the only loop that touches the queue
        self._queue: asyncio.Queue[Item] = asyncio.Queue(limit)
        self.closed = False
        self.dropped = False  # fell behind and was cut off

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Item:
        """A plain method, not a generator, so a caller may time it out without ending it."""
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        return item

    def offer(self, item: Item) -> None:
        """On the reader's loop; a SHUTDOWN event is the last."""
        if self.closed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = True
            self._end()
            return
        if item[1].get("event") == SHUTDOWN:
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
        self.epoch = f"{time.time_ns() // 1000:x}"  # ids of another luod never match
        self._count = 0
        self._held: deque[tuple[int, dict[str, Any]]] = deque(maxlen=limit)
        self._subscribers: set[Subscription] = set()
        self._lock = threading.RLock()  # subscribers may read on another thread's loop
        self.on_empty: Callable[[], None] | None = None  # called when the last one leaves

    @property
    def last_id(self) -> str:
        """The id of the last event published (the state a new subscriber starts from)."""
        return f"{self.epoch}-{self._count}"

    def subscribe(
        self, loop: asyncio.AbstractEventLoop | None = None, last_id: str | None = None
    ) -> tuple[Subscription, bool]:
        """A subscription read on ``loop`` (default: the running one); it receives every event
        published after this returns, and with ``last_id`` first the held events after that
        one. True when it resumes so (the hub still holds every event after ``last_id``)."""
        subscription = Subscription(self, self.limit, loop or asyncio.get_running_loop())
        with self._lock:
            missed = self._after(last_id)
            for count, event in missed or ():
                subscription.offer((f"{self.epoch}-{count}", event))
            self._subscribers.add(subscription)
        return subscription, missed is not None

    def _after(self, last_id: str | None) -> list[tuple[int, dict[str, Any]]] | None:
        """The held events after ``last_id``; None if it is not one of ours or too old."""
        epoch, _, count = (last_id or "").partition("-")
        if epoch != self.epoch or not count.isdigit() or int(count) > self._count:
            return None
        oldest = self._held[0][0] if self._held else self._count + 1
        if int(count) + 1 < oldest:
            return None  # some of what it missed is no longer held
        return [(n, event) for n, event in self._held if n > int(count)]

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._count += 1
            self._held.append((self._count, event))
            item = (self.last_id, event)
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            self._hand_over(subscription, item)

    def _hand_over(self, subscription: Subscription, event: Item) -> None:
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
            left = subscription in self._subscribers and len(self._subscribers) == 1
            self._subscribers.discard(subscription)
        if left and self.on_empty is not None:
            self.on_empty()

    def gap(self, missed: int) -> None:
        """``missed`` events were published without reaching this hub (nobody watched): their
        ids are spent, and no client resumes across them (it gets the state first)."""
        with self._lock:
            self._count += missed
            self._held.clear()

    def __len__(self) -> int:
        return len(self._subscribers)


def sse(event: dict[str, Any], event_id: str | None = None) -> bytes:
    """One Server-Sent Event: ``id:`` (resume from it), ``event:`` the luod event name,
    ``data:`` the JSON (one line)."""
    kind = str(event.get("event", "message"))
    data = json.dumps(event, separators=(",", ":"), sort_keys=True)
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {data}\n\n".encode()


RETRY: Final = f"retry: {RETRY_MS}\n\n".encode()


KEEPALIVE: Final = b": keepalive\n\n"
