"""The update driver on the simulator, in process (no sockets): corner cases of aborting, and
the kexec through systemd (with a stand-in for the fd store and for systemctl)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from luod.core import handoff, manifest, timeline
from luod.core.kexec_mode import SystemdFacts
from luod.core.orchestrator import Phase
from luod.custody.memory import MemoryCustody
from luod.daemon import uplink_watch
from luod.daemon.kexec_step import KexecSettings
from luod.daemon.update import UpdateDriver, UpdateRequest
from luod.errors import LuodError
from luod.net import uplink
from tests.rest.harness import FakeVmm, Luod, until


def test_an_abort_before_the_update_task_ran_still_aborts(tmp_path: Path) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path / "luod")
        try:
            await luod.handover_vm("vm1")
            driver = luod.driver
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


def kexec_pending(state: Path) -> bool:
    """The manifest on disk says a kexec is under way."""
    on_disk = manifest.read_disk(state)
    assert on_disk is not None, f"no manifest in {state}"
    return on_disk.kexec_pending


class FdStoreStandIn(MemoryCustody):
    """MemoryCustody posing as systemd's fd store: what kexec_systemd insists on."""

    kind = "systemd"  # type: ignore[misc]  # overrides a Final on purpose: the stand-in's point


def _systemd_luod(tmp_path: Path, start: Callable[[], None], timeout: float = 30) -> Luod:
    facts = SystemdFacts("systemd", 262, True, "luod.service")
    kexec = KexecSettings("auto", lambda: facts, start, timeout)
    return Luod(tmp_path / "luod", custody=FdStoreStandIn(), kexec=kexec)


async def _frozen_and_kexec(luod: Luod, vmm: FakeVmm) -> UpdateDriver:
    driver = luod.driver
    driver.start(UpdateRequest(luod.kernel))
    await until(lambda: vmm.events("FREEZE"))
    await luod.ask(vmm, {"cmd": "READY", "id": "vm1"})
    return driver


def test_systemd_mode_hands_everything_to_the_fd_store_then_lets_systemd_stop_luod(
    tmp_path: Path,
) -> None:
    seen: dict[str, object] = {}

    def systemctl_kexec() -> None:  # what systemd needs is in place when it is asked
        driver = luod.driver
        seen.update(
            phase=driver.machine.phase,
            deferring=driver.defers_signals,
            held=set(luod.custody.recover()),
            pending=kexec_pending(luod.state),
        )

    async def scenario() -> None:
        vmm = await luod.handover_vm("vm1")
        driver = await _frozen_and_kexec(luod, vmm)
        await until(lambda: seen and not driver.defers_signals)
        assert seen["phase"] is Phase.REBOOTING and seen["deferring"] is True
        assert seen["held"] == {"luod", "luod.vm1"} and seen["pending"] is True
        assert driver.record is not None and driver.record.request["kexec_mode"] == "systemd"
        driver.shutdown()  # systemd's SIGTERM
        await driver.wait()
        assert driver.machine.phase is Phase.REBOOTING  # never rolled back, never aborted
        assert driver.record.outcome == "running" and not vmm.events("RESUME")
        assert not luod.kexeced  # luod itself never called reboot(KEXEC)
        assert timeline.read_history(luod.state) == []  # the next boot's luod ends the record

    luod = _systemd_luod(tmp_path, systemctl_kexec)
    try:
        asyncio.run(scenario())
    finally:
        luod.close()


def test_systemd_refusing_the_kexec_rolls_back_and_resumes_every_vm(tmp_path: Path) -> None:
    def systemctl_kexec() -> None:
        raise LuodError("systemctl-kexec-failed", "systemctl kexec exited 1: inhibited")

    async def scenario() -> None:
        vmm = await luod.handover_vm("vm1")
        driver = await _frozen_and_kexec(luod, vmm)
        record = await driver.wait()
        assert record is not None and record.outcome == "failed"
        assert "systemctl-kexec-failed" in record.reason
        assert driver.machine.phase is Phase.IDLE and vmm.events("RESUME")
        assert kexec_pending(luod.state) is False
        assert luod.registry.get("vm1").state.value == "preserved"

    luod = _systemd_luod(tmp_path, systemctl_kexec)
    try:
        asyncio.run(scenario())
    finally:
        luod.close()


def test_a_kexec_systemd_never_carries_out_is_abandoned_after_the_timeout(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        vmm = await luod.handover_vm("vm1")
        driver = await _frozen_and_kexec(luod, vmm)
        record = await driver.wait()
        assert record is not None and record.outcome == "failed"
        assert "kexec-timeout" in record.reason
        assert driver.machine.phase is Phase.IDLE and driver.defers_signals is False
        assert vmm.events("RESUME")
        assert kexec_pending(luod.state) is False

    luod = _systemd_luod(tmp_path, lambda: None, timeout=0.2)
    try:
        asyncio.run(scenario())
    finally:
        luod.close()


def test_configured_systemd_on_a_host_that_cannot_is_refused_by_preflight(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        await luod.handover_vm("vm1")
        driver = luod.driver
        with pytest.raises(LuodError) as refused:
            driver.start(UpdateRequest(luod.kernel))
        assert refused.value.code == "preflight-failed" and "kexec-mode" in refused.value.message
        assert driver.machine.phase is Phase.IDLE

    luod = Luod(tmp_path / "luod", kexec=KexecSettings("systemd", lambda: SystemdFacts("memory")))
    try:
        asyncio.run(scenario())
    finally:
        luod.close()


def test_kexec_systemd_needs_the_fd_store_as_custody(tmp_path: Path) -> None:
    luod = Luod(tmp_path / "luod")
    try:
        with pytest.raises(LuodError) as refused:
            handoff.kexec_systemd(luod.registry, luod.daemon.backend, lambda: None)
        assert refused.value.code == "kexec-mode"
        assert isinstance(luod.custody, MemoryCustody)  # --simulate's: it lists what it holds
        assert "luod" not in luod.custody
    finally:
        luod.close()


def test_the_uplink_is_recorded_at_prepare_and_its_return_timed_after_the_kexec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uplink, "default_uplink", lambda: "eth9")
    asked: list[tuple[str, float]] = []

    def wait_up(link: str, timeout: float, stop: object) -> bool:
        asked.append((link, timeout))
        return True

    monkeypatch.setattr(uplink, "wait_up", wait_up)

    async def scenario() -> None:
        vmm = await luod.handover_vm("vm1")
        driver = await _frozen_and_kexec(luod, vmm)
        await until(lambda: luod.kexeced)
        assert driver.record is not None and driver.record.request["uplink"] == "eth9"
        assert driver.log.recorded_uplink() == "eth9"  # the record is open until the next boot
        await uplink_watch.watch(driver.log, delay=0, timeout=7)
        assert asked == [("eth9", 7)]
        assert "uplink_up" in driver.record.events
        driver.record.outcome = "completed"  # a closed record takes no late event
        assert driver.log.recorded_uplink() is None

    luod = Luod(tmp_path / "luod")
    try:
        asyncio.run(scenario())
    finally:
        luod.close()
