"""The READY barrier: an event (START_PRESERVATION, FREEZE) to every VM's VMM, and a READY from
each before the phase's deadline. The first refusal, or the deadline, ends the wait. Which VMs
are sent the event, counted without it, or cannot answer it: luod.core.dialect decides."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from luod.core import dialect
from luod.core.orchestrator import Phase, UpdateMachine
from luod.core.registry import Registry
from luod.daemon.connections import VmmConnections
from luod.daemon.update_log import UpdateLog
from luod.errors import LuodError
from luod.kernel import OwnedFd
from luod.vmm import codec

FdsFor = Callable[[str], tuple[OwnedFd, ...]]


class ReadyBarrier:
    def __init__(
        self,
        registry: Registry,
        connections: VmmConnections,
        machine: UpdateMachine,
        log: UpdateLog,
    ) -> None:
        self.registry = registry
        self.connections = connections
        self.machine = machine
        self.log = log
        self._waiting: set[str] = set()  # VMs whose READY the barrier awaits
        self._answers: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()  # (VM, error)
        self._asked: set[str] = set()  # VMs that were ever sent a barrier event

    async def cross(
        self, vms: list[str], event: str, phase: Phase, fds_for: FdsFor = lambda _: ()
    ) -> None:
        """Push ``event`` (with ``fds_for(vm)``) to each VM's connection that is to be sent it;
        every one must answer READY before the deadline."""
        steps = {vm_id: self._step(vm_id, event) for vm_id in vms}
        for vm_id, step in steps.items():
            if step.action is dialect.Action.REFUSE:
                raise LuodError(
                    "vm-refused",
                    f"VM {vm_id} cannot answer {event}: {step.note}",
                    "see the pause check of the preflight",
                )
        for vm_id, step in steps.items():
            conn = self.connections.of(vm_id) if step.action is dialect.Action.SEND else None
            self.log.sent(vm_id, event)
            if step.record:
                self.log.stamp(vm_id, step.record)
            if conn is None:
                self.log.acked(vm_id, event, note=step.note)
                continue
            self._waiting.add(vm_id)
            self._asked.add(vm_id)
            remaining = self.machine.remaining()
            deadline_ms = None if remaining is None else int(remaining * 1000)
            message = codec.event(event, id=vm_id, deadline_ms=deadline_ms)
            conn.push(codec.encode(message, fds_for(vm_id)))
        self.log.flush()  # the events' stamps, while the VMMs pause
        try:
            await self._collect(event, phase)
        finally:
            self._waiting.clear()
            self._answers = asyncio.Queue()  # answers this barrier did not take are late

    def _step(self, vm_id: str, event: str) -> dialect.Step:
        conn = self.connections.of(vm_id)
        granted = None if conn is None or conn.closed else conn.capabilities
        acked = self.log.stamped(vm_id, "preserve_ack")
        return dialect.barrier_step(event, self.registry.get(vm_id).mode, granted, acked)

    def ready(self, vm_id: str, error: str | None) -> str | None:
        """Deliver a READY: "ok" when awaited, "late" when its barrier already ended (an abort
        raced it: RESUME follows), None when nothing ever asked this VM."""
        if vm_id in self._waiting:
            self._waiting.discard(vm_id)
            self._answers.put_nowait((vm_id, error))
            return "ok"
        return "late" if vm_id in self._asked else None

    async def _collect(self, event: str, phase: Phase) -> None:
        """Each READY as it comes, in O(1) (an ``asyncio.wait`` over a future per VM cost
        O(VMs^2) callbacks: taking 1000 READYs took 111 ms of the event loop on a host, now
        7 ms), and the last one with one turn of the event loop: ``ready`` puts it in the queue
        this task waits on, under ``asyncio.timeout``. A future per VM and ``asyncio.wait_for``
        (which wraps its wait in a task of its own) took three turns under a deadline: a turn
        of luod's loop is a tenth of a millisecond or more of every VM's pause in a TCG guest
        (bench/NOTES.md)."""
        pending = set(self._waiting)
        while pending:
            vm_id, error = await self._next(pending, event, phase)
            pending.discard(vm_id)
            if error:
                raise LuodError(
                    "vm-refused",
                    f"VM {vm_id} answered {event} with: {error}",
                    "the VMM could not pause or preserve; fix it and retry",
                )
            self.log.acked(vm_id, event)
            if pending and self._answers.empty():
                # waiting for the next READY: what came so far goes to disk, and its line
                # to the handoff's (UpdateLog.stage)
                self.log.flush()

    async def _next(self, pending: set[str], event: str, phase: Phase) -> tuple[str, str | None]:
        """The next answer; one already in hand counts even past the deadline."""
        if not self._answers.empty():
            return self._answers.get_nowait()
        try:
            async with asyncio.timeout(self.machine.remaining()):
                return await self._answers.get()
        except TimeoutError:
            late = ", ".join(sorted(pending))
            raise LuodError(
                "deadline",
                f"no READY to {event} from {late} in time",
                f"{phase} deadline passed: those VMMs are stuck or gone",
            ) from None
