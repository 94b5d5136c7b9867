"""Dropping a VM for the operator (``luoctl vm drop``, ``DELETE /v1/vms/{id}``): unpreserve and
forget a VM whose VMM is gone, and say what was released.

Its VMM would DROP it itself (the VMM socket's verb); this is for when there is no VMM any
more. Refused while its VMM is connected, while an update runs, or for a VM that came through
the update with files not reclaimed, unless forced; never during the kexec itself (the
registry refuses every change then)."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from luod.core.model import VmState
from luod.core.orchestrator import Phase
from luod.core.registry import Registry
from luod.daemon.update import UpdateDriver
from luod.errors import LuodError
from luod.kernel import LuoError

log = structlog.get_logger("luod.drop")
FORCE_HINT = "--force (force=true) drops it anyway"


@dataclass(frozen=True)
class Released:
    id: str
    state: str  # the VM's state when it was dropped
    session: str
    files: int
    bytes: int
    destroyed: list[str]  # files that came through the update and were never reclaimed
    forced: bool


def drop_vm(registry: Registry, driver: UpdateDriver, vm_id: str, force: bool, by: str) -> Released:
    vm = registry.get(vm_id)
    if not force:
        _refuse_unforced(registry, driver, vm_id)
    unreclaimed = [f.name for f in vm.files.values() if not f.reclaimed]
    came_through = vm.state in (VmState.INCOMING, VmState.RECLAIMED)
    released = Released(
        vm.id,
        str(vm.state),
        vm.session,
        len(vm.files),
        sum(f.size for f in vm.files.values()),
        unreclaimed if came_through else [],
        force,
    )
    if registry.kexec_pending:
        raise LuodError("wrong-state", "a kexec is in progress", "retry after the update")
    try:  # a session that came through: FINISH it (closing it would, implicitly)
        registry.forget(vm, finish=came_through and registry.has_session(vm.id))
    except LuoError as exc:
        raise LuodError.from_luo(exc) from exc
    driver.connections.forget(vm_id)
    driver.ready(vm_id, None)  # a barrier waiting for it waits no more (it is gone)
    driver.vm_step(vm_id, "dropped")
    log.info("vm-dropped", vm=vm_id, by=by, forced=force, files=released.files)
    return released


def _refuse_unforced(registry: Registry, driver: UpdateDriver, vm_id: str) -> None:
    vm = registry.get(vm_id)
    if driver.connections.liveness(vm_id).connected:
        raise LuodError(
            "vm-connected",
            f"VM {vm_id!r} has its VMM connected",
            f"its VMM drops it (DROP), or stop the VMM first; {FORCE_HINT}",
        )
    if driver.machine.phase is not Phase.IDLE:
        raise LuodError(
            "update-running",
            f"an update is {driver.machine.phase}",
            f"drop it after the update, or abort the update; {FORCE_HINT}",
        )
    if vm.state in (VmState.INCOMING, VmState.RECLAIMED) and any(
        not f.reclaimed for f in vm.files.values()
    ):
        raise LuodError(
            "unreclaimed-files",
            f"VM {vm_id!r} came through the update with files not reclaimed",
            f"dropping it destroys them; {FORCE_HINT}",
        )
