"""``RemoteFacade``: the REST worker's facade, over the link to luod (luod.rest.link).

Every call crosses to luod's main event loop, where it waits behind the VMMs' requests. Reads
that pollers repeat (status, VMs, update) are therefore served from snapshots: the models built
from luod's last answer, stamped with when. A snapshot is served while it is younger than
``MAX_AGE``; from half that age a read also asks luod for a new one without waiting, so a steady
poller never waits for luod. An older snapshot (the first read after a quiet spell) is
refreshed before answering: a read shows luod as it was at most ``MAX_AGE`` before it arrived.
Phase changes and update ends (events on the link) and the mutations made over REST make every
snapshot stale at once, so they show in the next read; on a phase change the status is asked
for at once when someone polls it, so that pollers need not wait for it. Should luod not answer
within ``WAIT_LIMIT`` (its loop is busy), or be gone (it closed the link: a kexec, a stop), a
read serves the snapshot it has, however old, rather than hang or fail: as a poller across a
kexec saw before the API had a process of its own; the next poll finds no worker and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import structlog

from luod.core.access import AccessPolicy
from luod.rest import models
from luod.rest import qualification_models as qm
from luod.rest.facade import Watch
from luod.rest.link import CHANGES, LinkBroken, LinkClient
from luod.rest.port_facade import PortFacade, status_of, update_state, vm_list

log = structlog.get_logger("luod.rest")
MAX_AGE: Final = 0.05
WAIT_LIMIT: Final = 0.5
POLLED_WITHIN: Final = 1.0
CONVERT: Final[dict[str, Callable[[dict[str, Any]], models.Response]]] = {
    "status": status_of,
    "vms": vm_list,
    "update": update_state,
}
T = TypeVar("T")


class Snapshot(Generic[T]):
    def __init__(self, value: T, taken: float, generation: int) -> None:
        self.value = value
        self.taken = taken  # time.monotonic() when luod's answer arrived
        self.generation = generation  # RemoteFacade.generation then

    @cached_property
    def by_id(self) -> dict[str, models.Vm]:
        """For a VmList: its VMs by id (built on the first lookup)."""
        vms: list[models.Vm] = getattr(self.value, "vms", [])
        return {vm.id: vm for vm in vms}


class RemoteFacade(PortFacade):
    """Implements luod.rest.facade.RestFacade in the worker; ``publish`` is the link's
    ``on_event``."""

    def __init__(self, link: LinkClient, policy: AccessPolicy, state_dir: Path) -> None:
        super().__init__(link, policy, state_dir)
        self.generation = 0  # bumped by a phase change or a mutation: older snapshots are stale
        self._snapshots: dict[str, Snapshot[Any]] = {}
        self._pending: dict[str, asyncio.Future[Snapshot[Any]]] = {}
        self._status_read = -math.inf  # time.monotonic() of the last status read
        self._seq: int | None = None  # luod's number of the last event that arrived
        self._watches = 0  # luod's count of ``watch`` calls, as of the last answer here
        self.hub.on_empty = self._unwatch

    async def watch(self, last_id: str | None = None) -> Watch:
        """luod sends every event from its answer on (luod.rest.link's ``watch``)."""
        loop = asyncio.get_running_loop()

        def subscribed(data: dict[str, Any]) -> Watch:
            self._watches = int(data["watches"])
            stream, resumed = self.hub.subscribe(loop, last_id)
            return Watch(update_state(data["state"]), self.hub.last_id, stream, resumed)

        watch: Watch = await self.caller.call("watch", then=subscribed)
        return watch

    def _unwatch(self) -> None:
        """The last subscriber left: luod may stop sending what only subscribers read."""
        asyncio.ensure_future(self.caller.call("unwatch", self._watches)).add_done_callback(
            _quietly
        )

    def publish(self, event: dict[str, Any], seq: int | None = None) -> None:
        """An event from luod, ``seq`` its number there: a gap means luod left events out
        while nobody watched (luod.rest.link)."""
        if seq is not None:
            if self._seq is not None and seq > self._seq + 1:
                self.hub.gap(seq - self._seq - 1)
            self._seq = seq
        if event.get("event") in CHANGES:
            self.generation += 1
            if self._polled():  # the hot read: asked for now, so that no poller waits
                self._refresh("status").add_done_callback(_quietly)
        super().publish(event)

    async def status(self) -> models.Status:
        self._status_read = time.monotonic()
        return (await self._snapshot("status")).value  # type: ignore[no-any-return]

    def _polled(self) -> bool:
        """Someone read the status within POLLED_WITHIN: a new one is worth asking for at a
        phase change (in a freeze, that call takes luod's loop for a moment)."""
        return time.monotonic() - self._status_read < POLLED_WITHIN

    async def vms(self) -> models.VmList:
        return (await self._snapshot("vms")).value  # type: ignore[no-any-return]

    async def update(self) -> models.UpdateState:
        return (await self._snapshot("update")).value  # type: ignore[no-any-return]

    async def vm(self, vm_id: str) -> models.Vm:
        vm = (await self._snapshot("vms")).by_id.get(vm_id)
        if vm is None:  # ask luod itself: it may be brand new, or raise unknown-vm
            return await super().vm(vm_id)
        return vm

    async def _snapshot(self, name: str) -> Snapshot[Any]:
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
                    log.warning("rest-luod-busy", what=name, seconds=WAIT_LIMIT)
                except LinkBroken:  # luod is going (a kexec, a stop): its last word stands
                    pass
            else:
                refreshed.add_done_callback(_quietly)
        return snapshot

    def _refresh(self, name: str) -> asyncio.Future[Snapshot[Any]]:
        """Ask luod for a new snapshot of ``name``; one request at a time."""
        pending = self._pending.get(name)
        if pending is None:
            pending = self._pending[name] = asyncio.ensure_future(self._read(name))
        return pending

    async def _read(self, name: str) -> Snapshot[Any]:
        def taken(data: dict[str, Any]) -> Snapshot[Any]:
            snapshot = Snapshot(CONVERT[name](data), time.monotonic(), self.generation)
            self._snapshots[name] = snapshot
            return snapshot

        try:
            snapshot: Snapshot[Any] = await self.caller.call("read", name, then=taken)
            return snapshot
        finally:
            self._pending.pop(name, None)

    # --- mutations: the caller's next read shows what it did ------------------------------------
    async def start_update(
        self, request: models.UpdateStartRequest, uid: int | None
    ) -> models.UpdateRecord:
        return await self._mutating(lambda: super(RemoteFacade, self).start_update(request, uid))

    async def drop_vm(self, vm_id: str, force: bool, uid: int | None) -> models.DropResult:
        return await self._mutating(lambda: super(RemoteFacade, self).drop_vm(vm_id, force, uid))

    async def abort(self, reason: str | None, uid: int | None) -> models.AbortResult:
        return await self._mutating(lambda: super(RemoteFacade, self).abort(reason, uid))

    async def qualify(self, request: qm.QualifyRequest, uid: int | None) -> qm.QualificationRecord:
        return await self._mutating(lambda: super(RemoteFacade, self).qualify(request, uid))

    async def _mutating(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        finally:
            self.generation += 1


def _quietly(future: asyncio.Future[Any]) -> None:
    """A refresh nobody waited for: its failure is seen by the next read that waits."""
    with contextlib.suppress(asyncio.CancelledError):
        future.exception()
