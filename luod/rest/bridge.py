"""``LoopBridge``: the REST thread's facade over a facade that lives on luod's main event loop.

The REST API runs in a thread of its own (luod.rest.thread) so that a burst of requests never
queues in front of a VMM's READY. The bridge keeps it away from the main loop's state:

- Reads (status, VMs, update) come from snapshots: response models the main loop built
  (copies, which no later change touches) and stamped with when. A snapshot is served while it
  is younger than ``MAX_AGE``; from half that age a read also asks the main loop for a new one,
  without waiting, so a steady poller never waits for the main loop. An older snapshot (the
  first read after a quiet spell) is refreshed before answering: a read shows luod as it was at
  most ``MAX_AGE`` before it arrived. Phase changes (``changed``, called by the daemon's
  ``notify`` before the events reach SSE subscribers) and mutations made over REST make every
  snapshot stale at once, so they show in the next read; on a phase change the main loop also
  pushes a new status (built right there, some 25 µs), so that pollers need not wait for it.
- Should the main loop not answer within ``WAIT_LIMIT`` (it is blocked), a read serves the
  snapshot it has, however old, rather than hang.
- Mutations (preflight, start, abort), a VM the snapshot does not know, and subscribing to the
  events run on the main loop (``run_coroutine_threadsafe``), awaited here.
- While VMs freeze, the REST thread stands aside (``FREEZE_STANDOFF`` at most): the freeze
  barrier is the VMs' blackout, and every request served meanwhile takes the GIL from the loop
  that sends FREEZE and collects READY. A request that arrives then waits for the freeze to
  end instead (bench/rest_load.py measures both sides).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, Generic, Protocol, TypeVar

import structlog

from luod.rest import models
from luod.rest import qualification_models as qm
from luod.rest.facade import RestFacade, Watch
from luod.rest.history_reads import Ended

log = structlog.get_logger("luod.rest")
MAX_AGE: Final = 0.05
WAIT_LIMIT: Final = 0.5
FREEZE_STANDOFF: Final = 0.008
"""luod's own part of a freeze of 100 VMs is about 5 ms (bench/rest_load.py); a request held
back this long still answers within the 10 ms p99 target. A longer freeze waits for a VMM,
not for luod's CPU: the REST thread serves again."""
EVENTS_THAT_CHANGE_EVERYTHING: Final = frozenset({"PHASE", "UPDATE_END"})
T = TypeVar("T")


class LoopFacade(RestFacade, Protocol):
    def read(self, name: str) -> models.Response:
        """On the facade's loop, synchronously: ``status``, ``vms`` or ``update``."""
        ...

    def history_page(self, kind: str, cursor: str | None, limit: int) -> models.History:
        """From any thread: it reads the history file only (luod.rest.history_reads)."""
        ...

    def ended(self) -> list[Ended]:
        """From any thread, as ``history_page``."""
        ...

    def watch_from(self, loop: asyncio.AbstractEventLoop, last_id: str | None) -> Watch:
        """On the facade's loop: the state, and events handed over to a reader on ``loop``."""
        ...


@dataclass(frozen=True)
class Snapshot(Generic[T]):
    value: T
    taken: float  # time.monotonic() on the main loop
    generation: int  # LoopBridge.generation then

    @cached_property
    def by_id(self) -> dict[str, models.Vm]:
        """For a VmList: its VMs by id (built on the first lookup, in the REST thread)."""
        vms: list[models.Vm] = getattr(self.value, "vms", [])
        return {vm.id: vm for vm in vms}


class LoopBridge:
    """Implements RestFacade in the REST thread over ``inner``, which lives on ``loop``."""

    def __init__(self, inner: LoopFacade, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.main = loop
        self.generation = 0  # bumped on the main loop: every snapshot older is stale
        self._snapshots: dict[str, Snapshot[Any]] = {}  # only the REST loop touches these two
        self._pending: dict[str, asyncio.Future[Snapshot[Any]]] = {}
        self._rest: asyncio.AbstractEventLoop | None = None  # known from the first request
        self._thawed = threading.Event()
        self._thawed.set()

    # --- on the main loop -----------------------------------------------------------------------
    def changed(self, event: dict[str, Any]) -> None:
        """A daemon listener: a phase change or an update's end makes every snapshot stale;
        entering ``freezing`` sends the REST thread aside, leaving it calls it back."""
        if event.get("event") not in EVENTS_THAT_CHANGE_EVERYTHING:
            return
        self.generation += 1
        if self._rest is None:
            return  # no request yet: nothing to push to
        self._capture("status", self._rest)  # the hot read: pushed, so no poll waits for it
        if event.get("to") == "freezing":
            self._thawed.clear()
            _call_soon(self._rest, self._stand_aside)
        else:
            self._thawed.set()

    def _stand_aside(self) -> None:
        """On the REST loop, blocking it (and its GIL use) until the freeze ends."""
        self._thawed.wait(FREEZE_STANDOFF)

    # --- reads, on the REST loop ----------------------------------------------------------------
    def version(self) -> str:
        return self.inner.version()

    def sees_all(self, uid: int | None) -> bool:
        return self.inner.sees_all(uid)  # a frozen policy: safe from this thread

    async def status(self) -> models.Status:
        return (await self._snapshot("status")).value  # type: ignore[no-any-return]

    async def vms(self) -> models.VmList:
        return (await self._snapshot("vms")).value  # type: ignore[no-any-return]

    async def vm(self, vm_id: str) -> models.Vm:
        vm = (await self._snapshot("vms")).by_id.get(vm_id)
        if vm is None:  # ask the registry itself: it may be brand new, or raise unknown-vm
            return await self._on_main(lambda: self.inner.vm(vm_id))
        return vm

    async def update(self) -> models.UpdateState:
        return (await self._snapshot("update")).value  # type: ignore[no-any-return]

    async def history(self, kind: str, cursor: str | None, limit: int) -> models.History:
        return await asyncio.to_thread(self.inner.history_page, kind, cursor, limit)

    async def ended_updates(self) -> Sequence[Ended]:
        return await asyncio.to_thread(self.inner.ended)

    async def qualify(self, request: qm.QualifyRequest, uid: int | None) -> qm.QualificationRecord:
        return await self._on_main(lambda: self.inner.qualify(request, uid), mutates=True)

    async def qualifications(self) -> qm.QualificationList:
        return await self._on_main(self.inner.qualifications)

    async def qualification(self, qid: str) -> qm.QualificationRecord:
        return await self._on_main(lambda: self.inner.qualification(qid))

    def snapshot(self, name: str) -> Snapshot[Any] | None:
        """The last snapshot of ``name`` the REST thread got, if any (no refresh)."""
        return self._snapshots.get(name)

    async def _snapshot(self, name: str) -> Snapshot[Any]:
        self._rest = asyncio.get_running_loop()
        snapshot = self._snapshots.get(name)
        if snapshot is None:
            return await asyncio.shield(self._refresh(name))
        age = time.monotonic() - snapshot.taken
        if snapshot.generation != self.generation:
            age = math.inf
        if age >= MAX_AGE / 2:
            refreshed = self._refresh(name)
            if age >= MAX_AGE:
                try:
                    async with asyncio.timeout(WAIT_LIMIT):
                        return await asyncio.shield(refreshed)
                except TimeoutError:
                    log.warning("rest-main-loop-busy", what=name, seconds=WAIT_LIMIT)
        return snapshot

    def _refresh(self, name: str) -> asyncio.Future[Snapshot[Any]]:
        """Ask the main loop for a new snapshot of ``name``; one request at a time."""
        pending = self._pending.get(name)
        if pending is None:
            rest = asyncio.get_running_loop()
            pending = self._pending[name] = rest.create_future()
            try:
                self.main.call_soon_threadsafe(self._capture, name, rest)
            except BaseException:
                del self._pending[name]
                raise
        return pending

    def _capture(self, name: str, rest: asyncio.AbstractEventLoop) -> None:
        """On the main loop: the snapshot, handed to the REST loop."""
        try:
            snapshot = Snapshot(self.inner.read(name), time.monotonic(), self.generation)
        except Exception as exc:
            _call_soon(rest, self._store, name, None, exc)
        else:
            _call_soon(rest, self._store, name, snapshot, None)

    def _store(self, name: str, snapshot: Snapshot[Any] | None, error: Exception | None) -> None:
        """On the REST loop: keep it; answer the reads waiting for it."""
        pending = self._pending.pop(name, None)
        if snapshot is not None:
            self._snapshots[name] = snapshot
        if pending is None or pending.done():
            return
        if snapshot is not None:
            pending.set_result(snapshot)
        else:
            pending.set_exception(error or RuntimeError(f"no snapshot of {name}"))
            pending.exception()  # retrieved: a refresh nobody waited for fails quietly

    # --- on the main loop, awaited here ---------------------------------------------------------
    async def preflight(
        self, request: models.PreflightRequest, uid: int | None
    ) -> models.PreflightResult:
        return await self._on_main(lambda: self.inner.preflight(request, uid))

    async def start_update(
        self, request: models.UpdateStartRequest, uid: int | None
    ) -> models.UpdateRecord:
        return await self._on_main(lambda: self.inner.start_update(request, uid), mutates=True)

    async def drop_vm(self, vm_id: str, force: bool, uid: int | None) -> models.DropResult:
        return await self._on_main(lambda: self.inner.drop_vm(vm_id, force, uid), mutates=True)

    async def abort(self, reason: str | None, uid: int | None) -> models.AbortResult:
        return await self._on_main(lambda: self.inner.abort(reason, uid), mutates=True)

    async def watch(self, last_id: str | None = None) -> Watch:
        rest = asyncio.get_running_loop()

        async def together() -> Watch:
            return self.inner.watch_from(rest, last_id)

        return await self._on_main(together)

    async def _on_main(self, call: Callable[[], Awaitable[T]], *, mutates: bool = False) -> T:
        async def on_main() -> T:
            try:
                return await call()
            finally:
                if mutates:
                    self.generation += 1  # the caller's next read shows what it did

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_main(), self.main))


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(callback, *args)
