"""A small RECLAIM and DONE run on the event loop, as a small PRESERVE does (issue 17: 100 VMMs
reclaiming at once queued behind each other's thread hops); a big one still runs in a worker
thread, so that other VMMs keep being served while the kernel restores GiBs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from luod.core import reclaim
from luod.daemon import handler
from luod.daemon.update import UpdateRequest
from tests.rest.harness import Luod, until
from tests.unit.test_restart_mid_update import register_again


def test_small_reclaims_run_inline_and_big_ones_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        before = Luod(tmp_path / "luod")
        vmms = [await before.handover_vm("small"), await before.handover_vm("big", BIG)]
        before.driver.start(UpdateRequest(before.kernel))
        await until(lambda: all(v.events("FREEZE") for v in vmms))
        for vmm, vm_id in zip(vmms, ("small", "big"), strict=True):
            await before.ask(vmm, {"cmd": "READY", "id": vm_id})
        await before.driver.wait()
        assert before.kexeced
        before.die()

        after = Luod(tmp_path / "luod")
        after.driver.resume_after_kexec(after.daemon.started)
        threaded: list[Callable[..., Any]] = []
        real = asyncio.to_thread

        async def to_thread(call: Callable[..., Any], *args: Any) -> Any:
            threaded.append(call)
            return await real(call, *args)

        monkeypatch.setattr("luod.daemon.handler.asyncio.to_thread", to_thread)
        for vm_id in ("small", "big"):
            vmm = await register_again(after, vm_id)
            assert (await after.ask(vmm, {"cmd": "RECLAIM", "id": vm_id}))["ok"]
            assert (await after.ask(vmm, {"cmd": "DONE", "id": vm_id}))["ok"]
        assert threaded == [reclaim.reclaim]  # the big VM's (its DONE destroys nothing: inline)
        assert after.driver.record is not None and after.driver.record.outcome == "completed"
        after.close()

    asyncio.run(scenario())


BIG = handler.INLINE_BYTES  # sparse: the simulator copies nothing
