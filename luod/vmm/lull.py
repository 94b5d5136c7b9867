"""Requests that can wait run in a lull: in a turn of the event loop after one in which no
client was accepted and no other request was read or answered, one such request a turn.

After a kexec every VMM sends RECLAIM, and each sends DONE as soon as its RECLAIM is answered.
A DONE (FINISH, forget, journal) costs luod about as much as a RECLAIM, and nothing waits for
it: the VM runs again before its DONE. Served as they come, the first VMs' DONEs sit between the
last VMs and their memory (docs/architecture.md §4, "RECLAIM before DONE"). The wait is bounded
(``limit``): a client that never stops sending cannot hold a DONE back for longer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Final

LIMIT: Final = 1.0
"""Seconds a request waits for a lull at most; then it runs in the next turn, busy or not."""


class Lull:
    def __init__(self, limit: float = LIMIT) -> None:
        self.limit = limit
        self._stirred = 0
        self._waiting: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._watcher: asyncio.Task[None] | None = None

    def stir(self) -> None:
        """Something happened that must not wait: a client accepted, a request read or taken."""
        self._stirred += 1

    async def wait(self) -> None:
        """Return in a lull (or after ``limit``), after the requests that waited before."""
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiting.append((loop.time() + self.limit, turn))
        if self._watcher is None or self._watcher.done():
            self._watcher = loop.create_task(self._watch())
        await turn

    def close(self) -> None:
        """Stop watching; whoever still waits is cancelled."""
        if self._watcher is not None:
            self._watcher.cancel()
        while self._waiting:
            self._waiting.popleft()[1].cancel()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            seen = self._stirred
            await asyncio.sleep(0)  # one turn of the loop
            quiet = self._stirred == seen
            while self._waiting and self._waiting[0][1].done():  # its waiter was cancelled
                self._waiting.popleft()
            if self._waiting and (quiet or loop.time() >= self._waiting[0][0]):
                with contextlib.suppress(asyncio.InvalidStateError):
                    self._waiting.popleft()[1].set_result(None)
