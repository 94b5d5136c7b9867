"""``PortFacade``: the REST API's facade (luod.rest.facade.RestFacade) over luod's port
(luod.rest.port.DaemonPort), reached through a ``PortCaller``: across the link in the REST
worker (luod.rest.remote), or in the same process (luod.rest.adapter, tests and benches).

The port answers in plain data; this turns it into the response models, and the request
models into plain data. Reading the history and the ended updates takes no call: they are
files in luod's state directory, read here (luod.rest.history_reads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import luod
from luod.core.access import AccessPolicy
from luod.rest import history_reads, models, records
from luod.rest import qualification_models as qm
from luod.rest.events import EventHub
from luod.rest.facade import PreflightRefused, Watch
from luod.rest.link import Refused


class PortCaller(Protocol):
    async def call(self, name: str, *args: Any, then: Callable[[Any], Any] | None = None) -> Any:
        """The port's ``name(*args)`` (``read`` for its reads); ``then`` runs on the answer
        before any later event is published (luod.rest.link)."""
        ...


class PortFacade:
    """Implements luod.rest.facade.RestFacade."""

    def __init__(self, caller: PortCaller, policy: AccessPolicy, state_dir: Path) -> None:
        self.caller = caller
        self.policy = policy
        self.state_dir = state_dir
        self.hub = EventHub()
        self._ended = history_reads.EndedUpdates(state_dir)

    # --- events ---------------------------------------------------------------------------------
    def publish(self, event: dict[str, Any]) -> None:
        self.hub.publish(event)

    async def watch(self, last_id: str | None = None) -> Watch:
        """The state and a subscription taken together (see luod.rest.link)."""
        loop = asyncio.get_running_loop()

        def subscribed(data: Any) -> Watch:
            stream, resumed = self.hub.subscribe(loop, last_id)
            return Watch(update_state(data), self.hub.last_id, stream, resumed)

        watch: Watch = await self.caller.call("read", "update", then=subscribed)
        return watch

    # --- reads ----------------------------------------------------------------------------------
    def version(self) -> str:
        return luod.__version__

    def sees_all(self, uid: int | None) -> bool:
        return self.policy.sees_all(uid)

    async def status(self) -> models.Status:
        return status_of(await self.caller.call("read", "status"))

    async def vms(self) -> models.VmList:
        return vm_list(await self.caller.call("read", "vms"))

    async def vm(self, vm_id: str) -> models.Vm:
        return vm_of(await self.caller.call("vm", vm_id))

    async def update(self) -> models.UpdateState:
        return update_state(await self.caller.call("read", "update"))

    async def history(self, kind: str, cursor: str | None, limit: int) -> models.History:
        return await asyncio.to_thread(history_reads.page, self.state_dir, kind, cursor, limit)

    async def ended_updates(self) -> Sequence[history_reads.Ended]:
        return await asyncio.to_thread(self._ended.read)

    # --- the update -----------------------------------------------------------------------------
    async def preflight(
        self, request: models.PreflightRequest, uid: int | None
    ) -> models.PreflightResult:
        found = await self.caller.call("preflight", request.model_dump(mode="json"), uid)
        return models.PreflightResult(ok=found["ok"], checks=checks_of(found["checks"]))

    async def start_update(
        self, request: models.UpdateStartRequest, uid: int | None
    ) -> models.UpdateRecord:
        try:
            found = await self.caller.call("start_update", request.model_dump(mode="json"), uid)
        except Refused as refusal:
            raise PreflightRefused(refusal, checks_of(refusal.checks)) from refusal
        return records.update_record(found)

    async def drop_vm(self, vm_id: str, force: bool, uid: int | None) -> models.DropResult:
        found = await self.caller.call("drop_vm", vm_id, force, uid)
        return models.DropResult.model_validate(found)

    async def abort(self, reason: str | None, uid: int | None) -> models.AbortResult:
        found = await self.caller.call("abort", reason, uid)
        update = found.get("update")
        return models.AbortResult(update=records.update_record(update) if update else None)

    # --- qualifications -------------------------------------------------------------------------
    async def qualify(self, request: qm.QualifyRequest, uid: int | None) -> qm.QualificationRecord:
        found = await self.caller.call("qualify", request.model_dump(mode="json"), uid)
        return records.qualification_record(found)

    async def qualifications(self) -> qm.QualificationList:
        found = await self.caller.call("qualifications")
        return qm.QualificationList(qualifications=[records.qualification_record(r) for r in found])

    async def qualification(self, qid: str) -> qm.QualificationRecord:
        return records.qualification_record(await self.caller.call("qualification", qid))


def status_of(data: dict[str, Any]) -> models.Status:
    return models.Status.model_validate(data)


def vm_list(data: dict[str, Any]) -> models.VmList:
    return models.VmList(vms=[vm_of(vm) for vm in data["vms"]])


def vm_of(data: dict[str, Any]) -> models.Vm:
    return models.Vm.model_validate(
        {**data, "disconnected_since": records.time_of(data.get("disconnected_since"))}
    )


def update_state(data: dict[str, Any]) -> models.UpdateState:
    record = data.get("update")
    return models.UpdateState(
        phase=data["phase"], update=records.update_record(record) if record else None
    )


def checks_of(checks: list[dict[str, Any]]) -> list[models.Check]:
    return [models.Check.model_validate(c) for c in checks]
