"""The READY barrier takes each READY in O(1) (luod/daemon/barrier.py): it waited with an
``asyncio.wait`` over every pending VM per READY, O(VMs^2) callbacks: 111 ms of the event loop
for 1000 READYs on a host, inside every VM's pause."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from luod.core.orchestrator import Phase, UpdateMachine
from luod.core.registry import Registry
from luod.daemon.barrier import ReadyBarrier
from luod.daemon.connections import VmmConnections
from luod.daemon.update_log import UpdateLog

VMS = 400


class CountingFuture(asyncio.Future[Any]):
    callbacks = 0

    def add_done_callback(self, fn: Any, *, context: Any = None) -> None:
        CountingFuture.callbacks += 1
        super().add_done_callback(fn, context=context)


class CountingLoop(asyncio.SelectorEventLoop):
    def create_future(self) -> asyncio.Future[Any]:
        return CountingFuture(loop=self)


class NoDeadline:
    def remaining(self) -> float | None:
        return None


class Acks:
    """The update log, as far as the barrier's wait uses it: the READYs taken, in order."""

    def __init__(self) -> None:
        self.vms: list[str] = []
        self.flushed: list[int] = []  # how many READYs were taken at each flush

    def acked(self, vm_id: str, event: str, note: str | None = None) -> None:
        self.vms.append(vm_id)

    def flush(self) -> None:
        self.flushed.append(len(self.vms))


def test_every_ready_is_taken_with_callbacks_linear_in_the_vms() -> None:
    acks = Acks()
    machine = cast(UpdateMachine, NoDeadline())
    barrier = ReadyBarrier(
        cast(Registry, None), cast(VmmConnections, None), machine, cast(UpdateLog, acks)
    )
    names = [f"vm{i}" for i in range(VMS)]

    async def freeze(loop: asyncio.AbstractEventLoop) -> None:
        for vm in names:
            barrier._waiting[vm] = loop.create_future()
        collect = asyncio.ensure_future(barrier._collect("FREEZE", Phase.FREEZING))
        for vm in reversed(names):
            await asyncio.sleep(0)  # each READY in its own turn of the loop, as from a socket
            assert barrier.ready(vm, None) == "ok"
        await collect

    loop = CountingLoop()
    CountingFuture.callbacks = 0
    try:
        loop.run_until_complete(freeze(loop))
    finally:
        loop.close()
    assert CountingFuture.callbacks < 10 * VMS  # was about VMS^2 / 2 (80,000 here)
    assert acks.vms == list(reversed(names))  # stamped in the order the READYs came
    # each READY went to disk while the barrier waited for the next; the last one is left to
    # the transition's line
    assert acks.flushed == list(range(1, VMS))
