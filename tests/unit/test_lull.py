"""luod.vmm.lull: a request that can wait (DONE) runs only after a turn of the event loop with
nothing else to do, one a turn, in order; and never later than the limit."""

from __future__ import annotations

import asyncio

import pytest

from luod.vmm.lull import Lull


async def busy(lull: Lull, turns: int, log: list[str]) -> None:
    """Something that must not wait stirs the lull in each of ``turns`` turns."""
    for _ in range(turns):
        lull.stir()
        await asyncio.sleep(0)
    log.append("busy done")


async def waiter(lull: Lull, name: str, log: list[str]) -> None:
    await lull.wait()
    log.append(name)


def test_a_waiter_runs_after_the_busy_turns_not_between_them() -> None:
    async def body() -> list[str]:
        lull, log = Lull(), list[str]()
        await asyncio.gather(waiter(lull, "done", log), busy(lull, 50, log))
        return log

    assert asyncio.run(body()) == ["busy done", "done"]


def test_a_waiter_in_a_quiet_loop_runs_within_a_few_turns() -> None:
    async def body() -> int:
        lull, log = Lull(), list[str]()
        task = asyncio.create_task(waiter(lull, "done", log))
        for turns in range(1, 10):
            await asyncio.sleep(0)
            if log:
                return turns
        task.cancel()
        return -1

    assert 0 < asyncio.run(body()) <= 4


def test_waiters_go_in_order_one_a_turn() -> None:
    async def body() -> tuple[list[str], list[int]]:
        lull, log, released_at = Lull(), list[str](), list[int]()
        turn = 0

        async def count_turns() -> None:
            nonlocal turn
            while len(log) < 3:
                await asyncio.sleep(0)
                turn += 1

        async def numbered(name: str) -> None:
            await lull.wait()
            log.append(name)
            released_at.append(turn)

        await asyncio.gather(numbered("a"), numbered("b"), numbered("c"), count_turns())
        return log, released_at

    order, turns = asyncio.run(body())
    assert order == ["a", "b", "c"]
    assert len(set(turns)) == 3  # never two in the same turn


def test_a_client_that_never_stops_cannot_hold_a_waiter_past_the_limit() -> None:
    async def body() -> tuple[list[str], float]:
        lull, log = Lull(limit=0.05), list[str]()
        loop = asyncio.get_running_loop()
        start = loop.time()
        stirring = asyncio.create_task(busy(lull, 10**9, log))
        await waiter(lull, "done", log)
        took = loop.time() - start
        stirring.cancel()
        return log, took

    log, took = asyncio.run(body())
    assert log == ["done"]  # the busy loop was still going
    assert 0.05 <= took < 5


def test_close_cancels_whoever_waits() -> None:
    async def body() -> bool:
        lull = Lull()
        task = asyncio.create_task(lull.wait())
        lull.stir()
        await asyncio.sleep(0)
        lull.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(body())


def test_a_cancelled_waiter_does_not_take_the_next_ones_turn() -> None:
    async def body() -> list[str]:
        lull, log = Lull(), list[str]()
        first = asyncio.create_task(waiter(lull, "first", log))
        second = asyncio.create_task(waiter(lull, "second", log))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.gather(second, return_exceptions=True)
        return log

    assert asyncio.run(body()) == ["second"]
