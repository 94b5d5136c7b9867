"""A small RECLAIM and DONE run on the event loop, as a small PRESERVE does (issue 17: 100 VMMs
reclaiming at once queued behind each other's thread hops); a big one still runs in a worker
thread, so that other VMMs keep being served while the kernel restores GiBs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from luod.core import reclaim, running
from luod.daemon import handler
from tests.rest.harness import Luod
from tests.unit.test_restart_mid_update import register_again


def test_small_reclaims_run_inline_and_big_ones_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        before = Luod(tmp_path / "luod")
        vmms = {
            "small": await before.handover_vm("small"),
            "big": await before.handover_vm("big", BIG),
        }
        await before.kexec(vmms)
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


def test_each_reclaim_step_is_one_appended_line_not_the_record_again(tmp_path: Path) -> None:
    """Rewriting the whole record at every RECLAIM and DONE cost O(VMs) each, O(VMs²) in all."""

    async def scenario() -> None:
        before = Luod(tmp_path / "luod")
        await before.kexec({f"vm{i}": await before.handover_vm(f"vm{i}") for i in range(3)})
        before.die()

        after = Luod(tmp_path / "luod")
        after.driver.resume_after_kexec(after.daemon.started)
        on_disk = tmp_path / "luod" / running.RUNNING
        written = on_disk.read_text().splitlines()
        vmm = await register_again(after, "vm0")
        assert (await after.ask(vmm, {"cmd": "RECLAIM", "id": "vm0"}))["ok"]
        assert (await after.ask(vmm, {"cmd": "DONE", "id": "vm0"}))["ok"]
        lines = on_disk.read_text().splitlines()
        assert lines[: len(written)] == written and len(lines) == len(written) + 2
        found = running.read(after.state, after.registry.info.boot_id)
        assert found is not None and {"reclaimed", "done"} <= set(found.record.vms["vm0"])
        after.close()

    asyncio.run(scenario())
