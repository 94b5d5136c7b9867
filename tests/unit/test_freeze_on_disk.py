"""The freeze's stamps reach the running record (update-running.json) while the barrier waits
for READYs, not all in the line the last READY's transition writes: that line is written inside
every VM's pause, and at 100 VMs it carried 200 stamps (luod.daemon.update_log.flush)."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

from luod.core.running import RUNNING
from luod.daemon.update import UpdateRequest
from tests.rest.harness import Luod, until


def lines(state: Path) -> list[dict[str, Any]]:
    """The running record's appended lines (the first line is the record itself)."""
    return [json.loads(line) for line in (state / RUNNING).read_text().splitlines()[1:]]


def steps_on_disk(state: Path) -> set[tuple[str, str]]:
    return {(vm, name) for line in lines(state) for vm, name, _ in line["steps"]}


def on_disk(state: Path, step: tuple[str, str]) -> bool:
    return step in steps_on_disk(state)


def test_each_ready_is_on_disk_before_the_last_and_the_frozen_line_is_short(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        vmms = {vm: await luod.handover_vm(vm) for vm in ("vm1", "vm2", "vm3")}
        luod.driver.start(UpdateRequest(luod.kernel))
        await until(lambda: all(vmm.events("FREEZE") for vmm in vmms.values()))
        sent = {(vm, "freeze_sent") for vm in vmms}
        assert sent <= steps_on_disk(luod.state)  # written as the FREEZEs went out
        for vm in ("vm1", "vm2"):
            assert (await luod.ask(vmms[vm], {"cmd": "READY", "id": vm}))["ok"]
            await until(functools.partial(on_disk, luod.state, (vm, "freeze_ack")))
        assert (await luod.ask(vmms["vm3"], {"cmd": "READY", "id": "vm3"}))["ok"]
        await until(lambda: luod.kexeced)
        [frozen] = [
            line for line in lines(luod.state) if line.get("phase", {}).get("to") == "frozen"
        ]
        assert [step[:2] for step in frozen["steps"]] == [["vm3", "freeze_ack"]]

    luod = Luod(tmp_path / "luod")
    try:
        asyncio.run(scenario())
    finally:
        luod.close()
