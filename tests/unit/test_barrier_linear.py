"""The READY barrier takes each READY in O(1) (luod/daemon/barrier.py): it waited with an
``asyncio.wait`` over every pending VM per READY, O(VMs^2) callbacks: 111 ms of the event loop
for 1000 READYs on a host, inside every VM's pause. And the last READY resumes the update
within one turn of the event loop (it took three under a deadline, two without)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from luod.core.orchestrator import Phase, UpdateMachine
from luod.core.registry import Registry
from luod.daemon.barrier import ReadyBarrier
from luod.daemon.connections import VmmConnections
from luod.daemon.update_log import UpdateLog
from luod.errors import LuodError

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


class Deadline:
    def remaining(self) -> float | None:
        return 60.0


class Acks:
    """The update log, as far as the barrier's wait uses it: the READYs taken, in order."""

    def __init__(self) -> None:
        self.vms: list[str] = []
        self.flushed: list[int] = []  # how many READYs were taken at each flush

    def acked(self, vm_id: str, event: str, note: str | None = None) -> None:
        self.vms.append(vm_id)

    def flush(self) -> None:
        self.flushed.append(len(self.vms))


def barrier_of(acks: Acks, machine: object) -> ReadyBarrier:
    return ReadyBarrier(
        cast(Registry, None),
        cast(VmmConnections, None),
        cast(UpdateMachine, machine),
        cast(UpdateLog, acks),
    )


def test_every_ready_is_taken_with_callbacks_linear_in_the_vms() -> None:
    acks = Acks()
    barrier = barrier_of(acks, NoDeadline())
    names = [f"vm{i}" for i in range(VMS)]

    async def freeze(loop: asyncio.AbstractEventLoop) -> None:
        barrier._waiting.update(names)
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


@pytest.mark.parametrize("machine", [NoDeadline(), Deadline()], ids=["no deadline", "deadline"])
def test_the_last_ready_resumes_the_update_within_one_turn_of_the_loop(machine: object) -> None:
    acks = Acks()
    barrier = barrier_of(acks, machine)

    async def freeze() -> int:
        barrier._waiting.update(("vm1", "vm2"))
        barrier._asked.update(("vm1", "vm2"))
        collect = asyncio.ensure_future(barrier._collect("FREEZE", Phase.FREEZING))
        await asyncio.sleep(0)
        assert barrier.ready("vm1", None) == "ok"
        await asyncio.sleep(0)
        assert barrier.ready("vm2", None) == "ok"
        turns = 0
        while not collect.done():
            await asyncio.sleep(0)  # one turn of the loop
            turns += 1
        await collect
        return turns

    assert asyncio.run(freeze()) == 1  # 3 and 2 with a future per VM and asyncio.wait_for
    assert acks.vms == ["vm1", "vm2"]
    assert barrier.ready("vm2", None) == "late"  # asked, and the barrier is over


class Soon:
    def remaining(self) -> float | None:
        return 0.05


def test_past_the_deadline_the_vms_not_answered_are_named() -> None:
    acks = Acks()
    barrier = barrier_of(acks, Soon())

    async def freeze() -> None:
        barrier._waiting.update(("vm1", "vm2", "vm3"))
        assert barrier.ready("vm2", None) == "ok"  # in hand: counts even past the deadline
        await barrier._collect("FREEZE", Phase.FREEZING)

    with pytest.raises(LuodError) as raised:
        asyncio.run(freeze())
    assert raised.value.code == "deadline"
    assert "from vm1, vm3 in time" in raised.value.message
    assert acks.vms == ["vm2"]


def test_a_refusal_ends_the_wait_with_the_vms_answer() -> None:
    barrier = barrier_of(Acks(), NoDeadline())

    async def freeze() -> None:
        barrier._waiting.update(("vm1", "vm2"))
        collect = asyncio.ensure_future(barrier._collect("FREEZE", Phase.FREEZING))
        await asyncio.sleep(0)
        barrier.ready("vm1", "its VMM disconnected before answering READY")
        await collect

    with pytest.raises(LuodError) as raised:
        asyncio.run(freeze())
    assert raised.value.code == "vm-refused"
    assert "vm1 answered FREEZE with: its VMM disconnected" in raised.value.message
