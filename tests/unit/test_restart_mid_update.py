"""A luod killed in the middle of an update, restarted in the same boot (in process, on the
simulator; tests/vm/test_chaos.py does it with kill -9 on the real kernel): the update it left
ends in the history, paused VMMs get RESUME when they register again, a reclaim goes on to
``completed``; the `frozen` deadline calls a late kexec off; a state session retrieved by a luod
that died before its custody had it does not lose the VMs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from luod.core import holds, running, timeline
from luod.core.access import AccessPolicy
from luod.core.orchestrator import Phase
from luod.custody.memory import MemoryCustody
from luod.daemon.daemon import Daemon
from luod.daemon.settings import Settings
from luod.daemon.update import UpdateRequest
from luod.kernel import open_backend
from tests.rest.harness import FakeVmm, Luod, until

HELLO = {"cmd": "HELLO", "capabilities": ["freeze", "resume", "progress", "done"]}


class Restarted(Luod):
    """The next luod on the same kernel and custody (same boot): the old one was killed."""

    def __init__(self, old: Luod) -> None:
        old.die()  # its fds die with it (its lock too); custody keeps its copies
        self.state, self.kernel = old.state, old.kernel
        settings = Settings.simulated(old.state, access=AccessPolicy.default())
        self.daemon = Daemon(settings, backend=old.daemon.backend, custody=old.custody)
        self.daemon.startup(asyncio.create_task)
        self.registry, self.custody = self.daemon.registry, self.daemon.custody
        self.handler, self.driver = self.daemon.handler, self.daemon.driver
        self.connections = self.daemon.connections
        self.continued = self.driver.resume_interrupted(
            self.daemon.report.mode == "after-kexec", self.daemon.started
        )


def kill_during_update(luod: Luod) -> None:
    """What kill -9 leaves: the update task stops where it is, nothing more is written."""
    driver = luod.driver

    async def nothing(*_: object, **__: object) -> None:
        return None

    driver._abort = lambda *_, **__: None  # type: ignore[method-assign]
    driver._abort_in_time = nothing  # type: ignore[method-assign]
    driver.log.finish = lambda *_: None  # type: ignore[method-assign]
    assert driver._task is not None
    driver._task.cancel()


async def register_again(luod: Luod, vm_id: str) -> FakeVmm:
    vmm = FakeVmm()
    assert (await luod.ask(vmm, HELLO))["ok"]
    assert (await luod.ask(vmm, {"cmd": "REGISTER", "id": vm_id}))["ok"]
    return vmm


def test_killed_while_freezing_the_restart_aborts_it_and_resumes_paused_vmms(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path / "luod", custody=MemoryCustody())
        paused = await luod.handover_vm("vm1")
        await luod.handover_vm("vm2")  # never answers FREEZE
        luod.driver.start(UpdateRequest(luod.kernel, deadlines={"freezing": 60}))
        await until(lambda: paused.events("FREEZE"))
        assert (await luod.ask(paused, {"cmd": "READY", "id": "vm1"}))["ok"]
        assert luod.daemon.backend.kernel_loaded()
        kill_during_update(luod)
        await asyncio.sleep(0)
        assert running.read(luod.state, luod.registry.info.boot_id) is not None

        again = Restarted(luod)
        assert again.daemon.report.mode == "restart" and not again.continued
        [record] = timeline.read_history(again.state)
        assert record["outcome"] == "aborted"
        assert record["reason"].startswith("luod restarted during freezing")
        assert [p["to"] for p in record["phases"]][-3:] == ["freezing", "aborting", "idle"]
        assert running.read(again.state, again.registry.info.boot_id) is None
        assert not again.daemon.backend.kernel_loaded()  # the killed luod's kernel unloaded
        vmm = await register_again(again, "vm1")
        assert vmm.events("RESUME")[0]["reason"] == record["reason"]
        other = await register_again(again, "vm2")  # RESUME to every VM, paused or not
        assert other.events("RESUME")
        vmm = await register_again(again, "vm1")
        assert not vmm.events("RESUME")  # owed once
        assert {v.state.value for v in again.registry.vms.values()} == {"preserved"}
        again.driver.start(UpdateRequest(again.kernel, deadlines={"freezing": 60}))
        await until(lambda: vmm.events("FREEZE") and other.events("FREEZE"))
        for conn, vm_id in ((vmm, "vm1"), (other, "vm2")):
            assert (await again.ask(conn, {"cmd": "READY", "id": vm_id}))["ok"]
        await again.driver.wait()
        assert again.kexeced  # a later update works

    asyncio.run(scenario())


def test_killed_during_reclaiming_the_update_goes_on_and_reaches_the_history(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        before = Luod(tmp_path / "luod")
        await before.kexec({vm: await before.handover_vm(vm) for vm in ("vm1", "vm2")})

        before.die()  # the kexec ended it
        after = Luod(tmp_path / "luod", custody=MemoryCustody())
        after.driver.resume_after_kexec(after.daemon.started)
        assert after.driver.machine.phase is Phase.RECLAIMING
        first = await register_again(after, "vm1")
        assert (await after.ask(first, {"cmd": "RECLAIM", "id": "vm1"}))["ok"]
        assert (await after.ask(first, {"cmd": "DONE", "id": "vm1"}))["ok"]
        again = Restarted(after)  # killed with vm2 not yet reclaimed
        assert again.continued and again.driver.machine.phase is Phase.RECLAIMING
        assert timeline.read_history(again.state) == []
        second = await register_again(again, "vm2")
        assert (await again.ask(second, {"cmd": "RECLAIM", "id": "vm2"}))["ok"]
        assert (await again.ask(second, {"cmd": "DONE", "id": "vm2"}))["ok"]
        [record] = timeline.read_history(again.state)
        assert record["outcome"] == "completed"
        assert set(record["vms"]["vm1"]) >= {"freeze_ack", "done"}
        assert set(record["vms"]["vm2"]) >= {"freeze_ack", "reclaimed", "done"}
        assert all(b is not None for b in record["blackout"].values())
        assert str(again.driver.machine.phase) == "idle"

    asyncio.run(scenario())


def test_past_the_frozen_deadline_the_kexec_is_called_off_and_every_vm_resumes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path / "luod")
        vmm = await luod.handover_vm("vm1")
        luod.driver.start(UpdateRequest(luod.kernel, deadlines={"frozen": 1e-9}))
        await until(lambda: vmm.events("FREEZE"))
        await luod.ask(vmm, {"cmd": "READY", "id": "vm1"})
        record = await luod.driver.wait()
        assert record is not None and record.outcome == "aborted", record
        assert record.reason.startswith("deadline: frozen") and vmm.events("RESUME")
        assert not luod.kexeced and luod.driver.machine.phase is Phase.IDLE
        assert not luod.registry.kexec_pending
        assert luod.registry.get("vm1").state.value == "preserved"
        luod.close()

    asyncio.run(scenario())


def test_a_state_session_lost_after_its_retrieve_falls_back_to_the_disk_manifest(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        before = Luod(tmp_path / "luod")
        await before.kexec({"vm1": await before.handover_vm("vm1")})

        before.die()  # the kexec ended it
        backend = open_backend(tmp_path / "luod" / "kernel")
        with backend.device.open() as device:  # a luod killed right after this retrieve
            device.retrieve_session("luod").close()  # its last close: implicit FINISH
        settings = Settings.simulated(tmp_path / "luod", access=AccessPolicy.default())
        daemon = Daemon(settings, backend=backend, custody=MemoryCustody())
        daemon.startup(asyncio.create_task)
        assert daemon.report.mode == "after-kexec" and daemon.report.restored == ["vm1"]
        daemon.driver.resume_after_kexec(daemon.started)
        assert daemon.driver.machine.phase is Phase.RECLAIMING  # the record came along

    asyncio.run(scenario())


def test_holds_apply_only_to_the_named_points(monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv(holds.ENV, "frozen=0.5, recovery")
    assert holds.seconds("frozen") == 0.5 and holds.seconds("recovery") == holds.DEFAULT_SECONDS
    assert holds.seconds("prepared") == 0.0 and holds.seconds("nonsense") == 0.0


def test_a_kernel_unload_that_hangs_does_not_hold_the_abort_past_its_deadline(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path / "luod")
        vmm = await luod.handover_vm("vm1")
        backend = luod.daemon.backend
        unload = backend.unload_kernel

        def hanging_unload() -> None:
            time.sleep(1.5)
            unload()

        backend.unload_kernel = hanging_unload  # type: ignore[method-assign]
        request = UpdateRequest(luod.kernel, deadlines={"freezing": 60, "aborting": 0.2})
        luod.driver.start(request)
        await until(lambda: vmm.events("FREEZE"))
        began = time.monotonic()
        luod.driver.abort("operator")
        record = await luod.driver.wait()
        assert time.monotonic() - began < 1.2  # the abort did not wait for the unload
        assert record is not None and record.outcome == "aborted"
        assert record.reason.startswith("operator (the kernel unload did not end within")
        assert vmm.events("RESUME") and luod.driver.machine.phase is Phase.IDLE
        await asyncio.sleep(1.6)  # the unload ends in its thread after all
        luod.close()

    asyncio.run(scenario())
