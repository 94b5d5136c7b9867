"""The REST server in a thread of its own, with its own event loop, inside luod's process.

luod's main loop carries the VMM socket and the update driver; an HTTP request costs a few
hundred microseconds of Python, and on the same loop every one of them could sit in front of a
VMM's READY during a freeze. In its own thread the REST server waits only for the GIL, which the
main loop takes back at its next blocking call (and at worst after ``sys.getswitchinterval()``).

``serve_in_thread`` is awaited on the main loop like any task: it returns (or raises) when the
server does, and when cancelled it stops the server (open requests get uvicorn's grace period)
and waits for the thread to end, without blocking the main loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Final

import structlog
import uvloop

log = structlog.get_logger("luod.rest")
STOP_LIMIT: Final = 5.0
"""uvicorn's grace period is one second; past this the thread is given up on (it is a daemon
thread: it cannot keep luod from exiting)."""

Serve = Callable[[], Coroutine[Any, Any, None]]


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop. Measured in bench/rest_load.py while updates run, the p99 of a status poll
    drops from 5-10 ms to about 5 ms with it: fewer GIL round trips per request (asyncio's
    selector loop lets go of the GIL around each socket call and then waits for the main loop
    to hand it back; uvloop writes from C while it holds it)."""
    return uvloop.new_event_loop()


class _Runner:
    """The thread's side: runs ``serve()`` on a new loop; ``stop()`` may come from any thread."""

    def __init__(self, serve: Serve, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.serve = serve
        self.loop_factory = loop_factory
        self.ended: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self.loop_factory) as runner:
                runner.run(self._main())
        except asyncio.CancelledError:
            self._settle(None)
        except BaseException as exc:  # handed to the awaiting task, which raises it
            self._settle(exc)
        else:
            self._settle(None)

    async def _main(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._task = asyncio.current_task()
        await self.serve()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            task = self._task
        if task is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed: it ended
                task.get_loop().call_soon_threadsafe(task.cancel)

    def _settle(self, error: BaseException | None) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if error is None:
                self.ended.set_result(None)
            else:
                self.ended.set_exception(error)


async def serve_in_thread(
    serve: Serve,
    *,
    name: str = "luod-rest",
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = new_loop,
) -> None:
    """Run ``serve()`` in a new thread on a loop of its own until it ends or this is cancelled."""
    runner = _Runner(serve, loop_factory)
    thread = threading.Thread(target=runner.run, name=name, daemon=True)
    thread.start()
    ended = asyncio.wrap_future(runner.ended)
    try:
        await asyncio.shield(ended)
    except asyncio.CancelledError:
        runner.stop()
        await _stopped(ended)
        raise
    finally:
        if runner.ended.done():
            thread.join(1.0)  # it has returned from run(): a matter of microseconds


async def _stopped(ended: asyncio.Future[None]) -> None:
    try:
        async with asyncio.timeout(STOP_LIMIT):
            await asyncio.shield(ended)
    except TimeoutError:
        log.error("rest-thread-stuck", seconds=STOP_LIMIT, note="luod stops without it")
    except Exception as exc:  # it failed while stopping: we are stopping anyway
        log.warning("rest-stop-failed", error=repr(exc))
