"""The update driver on the simulator, in process (no sockets): corner cases of aborting."""

from __future__ import annotations

import asyncio
from pathlib import Path

from luod.core.orchestrator import Phase
from luod.daemon.update import UpdateRequest
from tests.rest.harness import Luod


def test_an_abort_before_the_update_task_ran_still_aborts(tmp_path: Path) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path / "luod")
        try:
            await luod.handover_vm("vm1")
            driver = luod.handler.driver
            driver.start(UpdateRequest(luod.kernel))
            driver.abort("changed my mind at once")  # the task has not run a step yet
            record = await driver.wait()
            await asyncio.sleep(0)
            assert record is not None and record.outcome == "aborted"
            assert record.reason == "changed my mind at once"
            assert driver.machine.phase is Phase.IDLE
            second = driver.start(UpdateRequest(luod.kernel, deadlines={"freezing": 1}))
            assert second.outcome == "running"  # not refused with update-running
            driver.abort("done")
            await driver.wait()
        finally:
            luod.close()

    asyncio.run(scenario())
