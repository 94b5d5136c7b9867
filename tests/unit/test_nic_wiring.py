"""The daemon's side of VM network plumbing (luod.daemon.nics, issue 15) over the simulator:
the declaration and the record cross the kexec in the manifest, only VMs that came through a
kexec get a rebuild, RECLAIM waits for its own VM's (bounded), and a VM without NICs never
imports pyroute2. The netlink work itself is tested in network namespaces
(tests/integration/test_net_rebuild.py, test_nic_daemon.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from luod.core import manifest_check
from luod.core.access import AccessPolicy
from luod.core.model import Mode, VmRecord, VmState
from luod.core.nic import NetRecord, NicDecl, NicRecord, TapFlags
from luod.custody.memory import MemoryCustody
from luod.daemon import daemon as daemon_module
from luod.daemon import nics
from luod.daemon.daemon import Daemon
from luod.daemon.settings import ApiSettings, Settings
from luod.errors import LuodError
from luod.kernel import open_backend
from tests.rest.harness import Luod, until
from tests.unit.test_core import OTHER, ROOT, World, kexec, preserve

pytestmark = pytest.mark.unit
TAP = NicRecord("vm1-net0", "tap", "52:54:00:00:01:00", 1500, True, tap=TapFlags(owner=107))
NET = NetRecord((TAP,))
REPORT = {
    "ready": True,
    "exact": True,
    "seconds": 0.004,
    "devices": [{"name": "vm1-net0", "role": "nic", "status": "rebuilt", "reason": ""}],
    "problems": [],
}


def declared(world: World) -> None:
    preserve(world.registry, "vm1", ram0=b"guest")
    world.registry.declare_nics(ROOT, "vm1", [NicDecl("vm1-net0", "br0")])
    world.registry.set_net("vm1", NET)


def after_kexec(world: World, tmp_path: Path) -> World:
    new = kexec(world, tmp_path)
    assert new.recover().mode == "after-kexec"
    return new


def test_the_declaration_and_the_record_cross_the_kexec(world: World, tmp_path: Path) -> None:
    declared(world)
    new = after_kexec(world, tmp_path)
    vm = new.registry.get("vm1")
    assert vm.state is VmState.INCOMING
    assert vm.nics == (NicDecl("vm1-net0", "br0"),) and vm.net == NET and vm.net_report is None
    assert nics.Rebuilds(new.registry, ()).pending() == {"vm1": NET}
    new.power_off()


def test_only_the_owner_declares_and_never_during_a_kexec(world: World) -> None:
    preserve(world.registry, "vm1", ram0=b"guest")
    with pytest.raises(LuodError) as caught:
        world.registry.declare_nics(OTHER, "vm1", [NicDecl("tap0")])
    assert caught.value.code == "not-owner"
    world.registry.begin_kexec()
    with pytest.raises(LuodError) as caught:
        world.registry.declare_nics(ROOT, "vm1", [NicDecl("tap0")])
    assert caught.value.code == "wrong-state"


def test_an_unreadable_net_record_is_that_vms_network_failure_not_a_lost_vm() -> None:
    data = VmRecord("vm1", ROOT.as_owner(), Mode.HANDOVER).to_dict()
    data["nics"] = [{"name": "vm1-net0", "bridge": None}]
    data["net"] = {**NET.to_dict(), "nics": [{"name": "vm1-net0", "kind": "tap"}]}
    vm = manifest_check.vm_record(data, "vms[0]")  # how the manifest reads a VM
    assert vm.net is None and vm.net_report is not None
    told = nics.summary(vm.net_report)
    assert not told["ready"] and "unreadable" in told["problems"][0]


def test_no_rebuild_without_a_kexec_or_once_done(world: World, tmp_path: Path) -> None:
    declared(world)
    assert nics.Rebuilds(world.registry, ()).pending() == {}  # preserved: a restart, no kexec
    new = after_kexec(world, tmp_path)
    new.registry.set_net_report("vm1", REPORT)  # rebuilt before luod restarted
    assert nics.Rebuilds(new.registry, ()).pending() == {}
    new.power_off()


Post = Callable[[str, dict[str, Any]], None]


def fake_rebuild(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[str], dict[str, Any]], delay: float = 0.0
) -> list[str]:
    rebuilt: list[str] = []

    def rebuild_all(todo: Mapping[str, NetRecord], managed: Any, post: Post) -> None:
        for vm_id in todo:
            asyncio.run(asyncio.sleep(delay))  # a worker thread: no loop of its own
            rebuilt.append(vm_id)
            post(vm_id, make(vm_id))

    monkeypatch.setattr(nics, "rebuild_all", rebuild_all)
    return rebuilt


def test_reclaim_waits_for_its_vms_rebuild_and_the_step_is_stamped(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared(world)
    new = after_kexec(world, tmp_path)
    rebuilt = fake_rebuild(monkeypatch, lambda _: REPORT, delay=0.2)
    steps: list[tuple[str, str]] = []

    async def scenario() -> dict[str, Any] | None:
        rebuilds = nics.Rebuilds(new.registry, ())
        rebuilds.start(lambda vm, step: steps.append((vm, step)))
        return await rebuilds.ready("vm1")

    told = asyncio.run(scenario())
    assert rebuilt == ["vm1"] and steps == [("vm1", "nics_rebuilt")]
    assert told is not None and told["ready"] and told["exact"] and told["problems"] == []
    assert new.registry.get("vm1").net_report == REPORT
    new.power_off()


def test_a_slow_rebuild_never_holds_reclaim_longer_than_the_wait(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared(world)
    new = after_kexec(world, tmp_path)
    fake_rebuild(monkeypatch, lambda _: REPORT, delay=2.0)

    async def scenario() -> dict[str, Any] | None:
        rebuilds = nics.Rebuilds(new.registry, (), wait=0.1)
        rebuilds.start(lambda vm, step: None)
        told = await rebuilds.ready("vm1")
        rebuilds.close()
        return told

    told = asyncio.run(scenario())
    assert told == {"ready": False, "exact": False, "pending": True, "devices": []}
    new.power_off()


def test_a_rebuild_that_dies_reports_every_vm_it_did_not_reach(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared(world)
    new = after_kexec(world, tmp_path)

    def rebuild_all(todo: Mapping[str, NetRecord], managed: Any, post: Post) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(nics, "rebuild_all", rebuild_all)

    async def scenario() -> dict[str, Any] | None:
        rebuilds = nics.Rebuilds(new.registry, ())
        rebuilds.start(lambda vm, step: None)
        await rebuilds.settled(5.0)  # returns, never raises: the REST API still starts
        with pytest.raises(RuntimeError):
            assert rebuilds._task is not None
            await rebuilds._task
        return await rebuilds.ready("vm1")

    told = asyncio.run(scenario())
    assert told is not None and not told["ready"] and "stopped" in told["problems"][0]
    new.power_off()


def test_a_vm_that_cannot_be_recorded_comes_back_with_the_reason(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    preserve(world.registry, "vm1", ram0=b"one")
    preserve(world.registry, "vm2", ram0=b"two")
    world.registry.declare_nics(ROOT, "vm1", [NicDecl("vm1-net0")])
    world.registry.declare_nics(ROOT, "vm2", [NicDecl("vm2-net0")])
    found = {"vm1": NET, "vm2": "not recorded at prepare: Operation not permitted (EPERM)"}
    monkeypatch.setattr(nics, "record_all", lambda decls, managed: found)
    asyncio.run(nics.record(world.registry, ()))
    assert world.registry.get("vm1").net == NET
    vm2 = world.registry.get("vm2")
    assert vm2.net is None and "EPERM" in nics.summary(vm2.net_report)["problems"][0]


def test_a_withdrawn_declaration_is_not_rebuilt(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared(world)
    world.registry.declare_nics(ROOT, "vm1", [])
    monkeypatch.setattr(nics, "record_all", lambda decls, managed: pytest.fail("netlink"))
    asyncio.run(nics.record(world.registry, ()))
    assert world.registry.get("vm1").net is None


def test_vms_without_nics_never_import_pyroute2(tmp_path: Path) -> None:
    """luod's start, an update's prepare and preflight, the rebuild step and RECLAIM's wait,
    all for VMs without NICs, in a fresh interpreter."""
    script = f"""
import asyncio, sys
from pathlib import Path
from luod.core.access import AccessPolicy
from luod.daemon import daemon as daemon_module
from luod.daemon.daemon import Daemon
from luod.daemon.settings import Settings
from luod.daemon import nics

async def main():
    daemon = Daemon(Settings.simulated(Path({str(tmp_path)!r}), access=AccessPolicy.default()))
    daemon.startup(asyncio.create_task)
    await nics.record(daemon.registry, ())
    assert nics.preflight_checks(nics.declared(daemon.registry), ()) == []
    daemon.nics.start(daemon.driver.vm_step)
    assert await daemon.nics.ready("vm1") is None

asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith(("pyroute2", "luod.net.plumbing"))))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.splitlines()[-1] == "[]", done.stdout + done.stderr


def test_after_a_kexec_the_rest_api_starts_once_the_nics_are_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its import would share the GIL with the rebuild's (luod.daemon.daemon.API_NIC_WAIT);
    the wait for the update's end (tests/unit/test_api_after_kexec.py) is left out here."""
    monkeypatch.setattr(daemon_module, "API_WAIT_AFTER_KEXEC", 0.0)
    monkeypatch.setattr(daemon_module, "API_WAIT_STARTS", 0.0)
    monkeypatch.setattr(nics, "record_all", lambda wanted, managed: dict.fromkeys(wanted, NET))
    moments: dict[str, float] = {}

    def rebuild_all(todo: Mapping[str, NetRecord], managed: Any, post: Post) -> None:
        time.sleep(0.5)  # a worker thread
        for vm_id in todo:
            post(vm_id, REPORT)
        moments["rebuilt"] = time.monotonic()

    monkeypatch.setattr(nics, "rebuild_all", rebuild_all)

    async def api(*args: Any) -> None:
        moments["api"] = time.monotonic()
        await asyncio.Event().wait()  # serves until cancelled

    async def scenario() -> None:
        before = Luod(tmp_path / "luod")
        vmm = await before.handover_vm("vm1")
        before.registry.declare_nics(vmm.peer, "vm1", [NicDecl("vm1-net0", "br0")])
        await before.kexec({"vm1": vmm})
        before.die()
        settings = Settings.simulated(
            tmp_path / "luod", access=AccessPolicy.default(), api=ApiSettings(tmp_path / "api")
        )
        backend = open_backend(tmp_path / "luod" / "kernel")
        daemon = Daemon(settings, backend=backend, custody=MemoryCustody(), api=api)
        running = asyncio.create_task(daemon.run())
        await until(lambda: "api" in moments)
        daemon.stop()
        await running

    asyncio.run(scenario())
    assert "rebuilt" in moments, "the REST API started before the NICs were rebuilt"
    assert moments["api"] >= moments["rebuilt"]


def test_settled_is_bounded_and_leaves_the_rebuild_running(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared(world)
    new = after_kexec(world, tmp_path)
    fake_rebuild(monkeypatch, lambda _: REPORT, delay=1.0)

    async def scenario() -> tuple[float, bool, float]:
        slow = nics.Rebuilds(new.registry, ())
        slow.start(lambda vm, step: None)
        began = time.monotonic()
        await slow.settled(0.1)
        bounded, still_running = time.monotonic() - began, not slow._done["vm1"].is_set()
        await slow.settled(5.0)  # not cancelled: it ends
        began = time.monotonic()
        await nics.Rebuilds(new.registry, ()).settled(5.0)  # nothing started: nothing to wait
        return bounded, still_running, time.monotonic() - began

    bounded, still_running, idle = asyncio.run(scenario())
    assert bounded < 0.5 and still_running and idle < 0.1
    assert new.registry.get("vm1").net_report == REPORT
    new.power_off()
