"""``DaemonFacade``: the daemon's facade for the REST API (luod.rest.facade.RestFacade), over
the update driver and the registry. Translation only: every decision stays in the
driver and the registry. Imported only with the REST stack (luod.rest.serving).

It belongs to luod's main event loop: call it there (the REST thread goes through
luod.rest.bridge). Its coroutines suspend only to read a kernel image in a worker thread
(preflight, start); every model it returns is a copy, which no later change of luod's state
touches.

Events: ``publish(event)`` listens on the daemon's event bus (luod.daemon.events) and fans each
update event out to the REST subscribers (luod.rest.events) without ever blocking the update.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import luod
from luod.core import preflight, qualify, timeline
from luod.core.model import VmRecord, VmState
from luod.core.registry import Registry
from luod.daemon import drop
from luod.daemon.connections import Liveness
from luod.daemon.nics import summary
from luod.daemon.qualification import QualificationDriver, QualifyRequest
from luod.daemon.qualification_chain import ChainKernel
from luod.daemon.update import UpdateDriver, UpdateRequest
from luod.errors import LuodError
from luod.rest import history_reads, models, records
from luod.rest import qualification_models as qm
from luod.rest.events import EventHub
from luod.rest.facade import PreflightRefused, Watch

ROOT = 0


class DaemonFacade:
    """Implements luod.rest.facade.RestFacade."""

    def __init__(
        self,
        registry: Registry,
        driver: UpdateDriver,
        qualifications: QualificationDriver | None = None,
    ) -> None:
        self.registry = registry
        self.driver = driver
        self.qualifier = qualifications
        self.hub = EventHub()
        self._ended = history_reads.EndedUpdates(registry.state_dir)

    # --- events ---------------------------------------------------------------------------------
    def publish(self, event: dict[str, Any]) -> None:
        self.hub.publish(event)

    async def watch(self, last_id: str | None = None) -> Watch:
        return self.watch_from(asyncio.get_running_loop(), last_id)

    def watch_from(self, loop: asyncio.AbstractEventLoop, last_id: str | None) -> Watch:
        """The state and a subscription read on ``loop`` (maybe another thread's), taken
        together on this loop."""
        state = self._update()
        stream, resumed = self.hub.subscribe(loop, last_id)
        return Watch(state, self.hub.last_id, stream, resumed)

    # --- reads ----------------------------------------------------------------------------------
    def version(self) -> str:
        return luod.__version__

    def sees_all(self, uid: int | None) -> bool:
        return self.registry.sees_all(uid)

    def read(self, name: str) -> models.Response:
        """``status``, ``vms`` or ``update``, synchronously (the bridge's snapshots are taken
        in a plain callback on this loop)."""
        reader: Callable[[], models.Response] = getattr(self, f"_{name}")
        return reader()

    async def status(self) -> models.Status:
        return self._status()

    async def vms(self) -> models.VmList:
        return self._vms()

    async def update(self) -> models.UpdateState:
        return self._update()

    async def history(self, kind: str, cursor: str | None, limit: int) -> models.History:
        return await asyncio.to_thread(self.history_page, kind, cursor, limit)

    async def ended_updates(self) -> list[history_reads.Ended]:
        return await asyncio.to_thread(self.ended)

    def history_page(self, kind: str, cursor: str | None, limit: int) -> models.History:
        return history_reads.page(self.registry.state_dir, kind, cursor, limit)

    def ended(self) -> list[history_reads.Ended]:
        return self._ended.read()

    def _status(self) -> models.Status:
        """From the boot's KernelInfo the registry keeps: ``backend.info()`` probes again,
        reading all of /dev/kmsg, which a status poll or a metrics scrape must not cost."""
        info = self.registry.info
        files = [f for vm in self.registry.vms.values() for f in vm.files.values()]
        return models.Status(
            host=socket.gethostname(),
            kernel=info.release,
            luo_supported=info.device_present,
            liveupdate_number=info.liveupdate_number,
            phase=self.driver.machine.phase,
            vms=len(self.registry.vms),
            sessions=self.registry.open_sessions(),
            files=len(files),
            preserved_bytes=sum(f.size for f in files),
            backend=self.registry.backend_name,
            version=luod.__version__,
            custody=models.CustodyHealth.model_validate(self.registry.custody_health._asdict()),
        )

    def _vms(self) -> models.VmList:
        return models.VmList(vms=[self._vm(vm) for vm in self.registry.vms.values()])

    async def vm(self, vm_id: str) -> models.Vm:
        return self._vm(self.registry.get(vm_id))

    def _vm(self, vm: VmRecord) -> models.Vm:
        return _vm(vm, self.driver.connections.liveness(vm.id))

    async def drop_vm(self, vm_id: str, force: bool, uid: int | None) -> models.DropResult:
        caller = ROOT if uid is None else uid
        _root_only(caller, "dropping a VM")
        by = "token" if uid is None else f"uid {uid}"
        released = drop.drop_vm(self.registry, self.driver, vm_id, force, by)
        return models.DropResult(
            id=released.id,
            state=VmState(released.state),
            forced=released.forced,
            released=models.Released(
                session=released.session,
                files=released.files,
                bytes=released.bytes,
                destroyed=released.destroyed,
            ),
        )

    def _update(self) -> models.UpdateState:
        record = self.driver.record
        return models.UpdateState(
            phase=self.driver.machine.phase,
            update=_record(record) if record else None,
        )

    # --- qualifications -------------------------------------------------------------------------
    def _qualifier(self) -> QualificationDriver:
        if self.qualifier is None:
            raise LuodError("not-supported", "this luod runs no qualifications", "")
        return self.qualifier

    async def qualify(self, request: qm.QualifyRequest, uid: int | None) -> qm.QualificationRecord:
        caller = ROOT if uid is None else uid
        _root_only(caller, "qualifying a live update")
        options = qualify.Options(request.large_mib, request.many_files, request.sessions)
        wanted = QualifyRequest(
            tuple(_chain_kernel(k) for k in request.chain),
            options,
            with_vms=request.with_vms,
            qemu_canary=request.qemu_canary,
            requested_by=caller,
        )
        return records.qualification_record(self._qualifier().start(wanted))

    async def qualifications(self) -> qm.QualificationList:
        found = self._qualifier().listing()
        return qm.QualificationList(qualifications=[records.qualification_record(r) for r in found])

    async def qualification(self, qid: str) -> qm.QualificationRecord:
        return records.qualification_record(self._qualifier().get(qid))

    # --- the update -----------------------------------------------------------------------------
    async def preflight(
        self, request: models.PreflightRequest, uid: int | None
    ) -> models.PreflightResult:
        """Root only (it reads files as root: any other caller would learn which exist). The
        images are read in a worker thread first (``compat.CACHE``), so the checks on the
        loop only stat them."""
        caller = ROOT if uid is None else uid
        _root_only(caller, "a preflight")
        await asyncio.to_thread(self.driver.read_images, Path(request.kernel))
        checks = self.driver.check(_request(request, caller))
        return models.PreflightResult(ok=not preflight.failed(checks), checks=_checks(checks))

    async def start_update(
        self, request: models.UpdateStartRequest, uid: int | None
    ) -> models.UpdateRecord:
        """``uid`` None: a TCP caller with the bearer token, who acts as root."""
        caller = ROOT if uid is None else uid
        _root_only(caller, "starting an update")
        await asyncio.to_thread(self.driver.read_images, Path(request.kernel))
        wanted = _request(request, caller)
        try:
            record = self.driver.start(wanted)
        except preflight.Refused as refusal:
            raise PreflightRefused(refusal, _checks(refusal.checks)) from refusal
        return _record(record)

    async def abort(self, reason: str | None, uid: int | None) -> models.AbortResult:
        caller = ROOT if uid is None else uid
        _root_only(caller, "aborting an update")
        by = "token" if uid is None else f"uid {uid}"
        self.driver.abort(reason or f"abort requested over the REST API by {by}", by)
        record = await self.driver.wait()
        return models.AbortResult(update=_record(record) if record else None)


def _root_only(uid: int, what: str) -> None:
    """As on the VMM socket (UPDATE, ABORT): the socket's group may look, only root may act."""
    if uid != ROOT:
        raise LuodError("not-allowed", f"{what} needs root (uid {uid})", "ask the host operator")


def _request(request: models.PreflightRequest, uid: int) -> UpdateRequest:
    deadlines = getattr(request, "deadline_seconds", {})
    return UpdateRequest(
        Path(request.kernel),
        Path(request.initrd) if request.initrd else None,
        None if request.reuse_cmdline else request.cmdline,
        {str(phase): float(seconds) for phase, seconds in deadlines.items()},
        False,
        uid,
        request.allow_unknown_abi,
    )


def _checks(checks: list[preflight.Check]) -> list[models.Check]:
    return [models.Check.model_validate(c.to_dict()) for c in checks]


def _record(record: timeline.UpdateRecord) -> models.UpdateRecord:
    return records.update_record(record.to_dict())


def _vm(vm: VmRecord, liveness: Liveness) -> models.Vm:
    return models.Vm(
        id=vm.id,
        owner_uid=vm.owner.uid,
        mode=vm.mode.value,
        state=vm.state,
        session=vm.session,
        files=[models.VmFile.model_validate(f.to_dict()) for f in vm.files.values()],
        note=vm.note,
        rejected=dict(vm.rejected),
        connected=liveness.connected,
        disconnected_since=records.time_of(liveness.since),
        nics=[models.VmNic.model_validate(nic.to_dict()) for nic in vm.nics],
        net=None if vm.net_report is None else models.VmNet.model_validate(summary(vm.net_report)),
    )


def _chain_kernel(kernel: str | qm.ChainKernel) -> ChainKernel:
    if isinstance(kernel, str):
        return ChainKernel(Path(kernel))
    initrd = Path(kernel.initrd) if kernel.initrd else None
    return ChainKernel(Path(kernel.image), initrd, kernel.cmdline)


if TYPE_CHECKING:
    from luod.rest.facade import RestFacade

    def _implements(registry: Registry, driver: UpdateDriver) -> RestFacade:
        return DaemonFacade(registry, driver)  # mypy checks the Protocol here
