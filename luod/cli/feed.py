"""luod's event stream, read in a thread and handed over through a queue, so that a command
can wait on it with a timeout (``update wait --timeout``) or redraw while nothing happens
(``update watch``). A stream that breaks is resumed from the last event id (Last-Event-ID)."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

from luod.cli.client import Api, ApiError, Unreachable
from luod.cli.sse import Event

RECONNECT_PAUSE = 0.5


@dataclass(frozen=True)
class Ended:
    """The stream is over: luod closed it (``error`` None) or could not be reached."""

    error: Exception | None = None


class Feed:
    """Events of ``/v1/events`` as they come; started at once, read with ``next``."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.last_id: str | None = None
        self._queue: queue.Queue[Event | Ended] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> Feed:
        """(Re)connect, from after the last event seen, if any."""
        self._thread = threading.Thread(target=self._read, name="luoctl-events", daemon=True)
        self._thread.start()
        return self

    def next(self, timeout: float | None) -> Event | Ended | None:
        """The next event, ``Ended``, or None when ``timeout`` seconds passed without one."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, Event) and item.id is not None:
            self.last_id = item.id
        return item

    def _read(self) -> None:
        try:
            for event in self.api.events(self.last_id):
                self._queue.put(event)
        except (Unreachable, ApiError) as exc:
            self._queue.put(Ended(exc))
        except Exception as exc:  # handed to the main thread, which reports it
            self._queue.put(Ended(exc))
        else:
            self._queue.put(Ended())


def reconnect(feed: Feed, until: float) -> bool:
    """After the stream ended: start again (after the pause luod's ``retry:`` asked for) if
    there is time left before ``until``."""
    pause = min(feed.api.retry_seconds or RECONNECT_PAUSE, RECONNECT_PAUSE * 4)
    if time.monotonic() + pause >= until:
        return False
    time.sleep(pause)
    feed.start()
    return True
