"""Both dialects on one luod (handler + update driver over the simulator, in process): a
luo-agent client (no HELLO: SUBSCRIBE, START_PRESERVATION, one READY, CLAIM) next to luod's
own clients, across an update and its kexec. Every frame luod sends is checked against the
schemas."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from luod.core import dialect
from luod.core.clock import SystemClock
from luod.kernel import OwnedFd
from tests.rest.harness import until
from tests.unit.test_vmm_schemas import FAKE_BZIMAGE, FakeConnection, Luod, problems

pytestmark = pytest.mark.unit
LUOD_DIALECT = {"cmd": "HELLO", "capabilities": sorted(dialect.ALL)}


async def handover(luod: Luod, vm: str, hello: bool = True) -> FakeConnection:
    conn = FakeConnection()
    if hello:
        assert (await luod.ask(conn, LUOD_DIALECT))["ok"]
    ram = OwnedFd(os.memfd_create(vm))
    os.ftruncate(ram.fileno(), 4096)
    assert (await luod.ask(conn, {"cmd": "REGISTER", "id": vm}))["ok"]
    assert (await luod.ask(conn, {"cmd": "PRESERVE", "id": vm, "files": ["ram0"]}, (ram,)))["ok"]
    return conn


async def luo_agent(luod: Luod, vm: str) -> FakeConnection:
    conn = FakeConnection()
    assert (await luod.ask(conn, {"cmd": "SUBSCRIBE", "id": vm}))["ok"]
    return conn


def valid(*conns: FakeConnection, luod: Luod) -> None:
    for message, nfds in [*luod.sent, *(f for c in conns for f in c.frames)]:
        assert problems(message, nfds) == [], message


def kernel(state: Path) -> str:
    image = state / "bzImage"
    image.write_bytes(FAKE_BZIMAGE)
    return str(image)


def test_hello_grants_what_luod_knows_and_lists_what_it_offers(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any]:
        luod = Luod(tmp_path)
        try:
            conn = FakeConnection()
            asked = {"cmd": "HELLO", "capabilities": ["resume", "teleport"]}
            answer = await luod.ask(conn, asked)
            assert conn.capabilities == {"resume"}
            return answer
        finally:
            luod.close()

    answer = asyncio.run(scenario())
    assert answer["capabilities"] == ["resume"]
    assert answer["supported"] == sorted(dialect.ALL)


def test_watch_without_the_progress_capability_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path)
        try:
            conn = FakeConnection()
            refused = await luod.ask(conn, {"cmd": "WATCH"})
            assert refused["error"]["code"] == "capability-missing"
            assert "progress" in refused["error"]["hint"]
            await luod.ask(conn, {"cmd": "HELLO", "capabilities": ["progress"]})
            assert (await luod.ask(conn, {"cmd": "WATCH"}))["ok"]
            valid(conn, luod=luod)
        finally:
            luod.close()

    asyncio.run(scenario())


def test_a_luo_agent_client_is_served_as_luo_agent_would_across_the_kexec(
    tmp_path: Path,
) -> None:
    """START_PRESERVATION with the session fd, one READY, no FREEZE: the update reaches the
    kexec long before a 0.3 s freezing deadline could pass; after it, CLAIM ends the VM."""

    async def before() -> None:
        luod = Luod(tmp_path)
        agent, vmm, op = (
            await luo_agent(luod, "agent"),
            await handover(luod, "vm1"),
            FakeConnection(),
        )
        await luod.ask(op, LUOD_DIALECT)
        assert (await luod.ask(op, {"cmd": "WATCH"}))["ok"]
        checks = (await luod.ask(op, {"cmd": "UPDATE", "kernel": kernel(tmp_path),
                                      "dry_run": True}))["checks"]  # fmt: skip
        (pause,) = [c for c in checks if c["id"] == "pause"]
        assert pause["status"] == "warn" and "agent" in pause["message"]
        update = {"cmd": "UPDATE", "kernel": kernel(tmp_path), "wait": True,
                  "deadlines": {"freezing": 0.3}}  # fmt: skip
        waiting = asyncio.create_task(luod.ask(op, update))
        await until(lambda: agent.events("START_PRESERVATION"))
        assert [n for m, n in agent.frames if m.get("event")] == [1]  # the session fd
        assert (await luod.ask(agent, {"cmd": "READY"}))["ok"]  # no id: its only VM
        await until(lambda: vmm.events("FREEZE"))
        await luod.ask(vmm, {"cmd": "READY", "id": "vm1"})
        await asyncio.wait_for(waiting, 5)
        assert luod.kexeced
        assert [m.get("event") for m, _ in agent.frames if "event" in m] == ["START_PRESERVATION"]
        agent_steps = [m for m in op.events("VM_PROGRESS") if m["id"] == "agent"]
        assert [m["step"] for m in agent_steps] == ["preserve_ack", "freeze_ack"]
        assert "luo-agent dialect" in agent_steps[1]["note"]
        valid(agent, vmm, op, luod=luod)
        luod.close()

    async def after() -> None:
        luod = Luod(tmp_path)
        luod.handler.driver.resume_after_kexec(SystemClock().now())
        agent, vmm = FakeConnection(), FakeConnection()
        await luod.ask(vmm, LUOD_DIALECT)
        claimed = await luod.ask(agent, {"cmd": "CLAIM", "id": "agent"})
        assert claimed["ok"] and luod.sent[-1][1] == 1  # the session fd came with it
        assert "agent" not in luod.registry.vms  # custody ended: no DONE in its dialect
        await luod.ask(vmm, {"cmd": "RECLAIM", "id": "vm1"})
        await luod.ask(vmm, {"cmd": "DONE", "id": "vm1"})
        record = luod.handler.driver.record
        assert record is not None and record.outcome == "completed", record
        assert set(record.vms["agent"]) >= {"freeze_trusted", "freeze_ack", "reclaimed", "done"}
        assert "freeze_trusted" not in record.vms["vm1"]  # luod paused that one itself
        assert record.blackout()["agent"] is not None
        valid(agent, vmm, luod=luod)
        luod.close()

    asyncio.run(before())
    asyncio.run(after())


def test_an_abort_resumes_only_the_clients_that_asked_for_resume(tmp_path: Path) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path)
        try:
            agent, vmm = await luo_agent(luod, "agent"), await handover(luod, "vm1")
            op = FakeConnection()
            await luod.ask(op, LUOD_DIALECT)
            update = {"cmd": "UPDATE", "kernel": kernel(tmp_path), "wait": True}
            waiting = asyncio.create_task(luod.ask(op, update))
            await until(lambda: agent.events("START_PRESERVATION"))
            await luod.ask(agent, {"cmd": "READY"})
            await until(lambda: vmm.events("FREEZE"))
            await luod.ask(vmm, {"cmd": "READY", "id": "vm1", "error": "cannot pause"})
            assert (await waiting)["update"]["outcome"] == "aborted"
            assert vmm.events("RESUME") and not agent.events("RESUME")
            valid(agent, vmm, op, luod=luod)
        finally:
            luod.close()

    asyncio.run(scenario())


def test_a_handover_vm_whose_vmm_never_asked_for_freeze_is_refused_by_preflight(
    tmp_path: Path,
) -> None:
    async def scenario() -> dict[str, Any]:
        luod = Luod(tmp_path)
        try:
            await handover(luod, "raw", hello=False)
            op = FakeConnection()
            return await luod.ask(op, {"cmd": "UPDATE", "kernel": kernel(tmp_path)})
        finally:
            luod.close()

    refused = asyncio.run(scenario())
    assert refused["error"]["code"] == "preflight-failed"
    assert "pause" in refused["error"]["message"] and "raw" in refused["error"]["hint"]


def test_a_vmm_that_loses_freeze_during_the_update_aborts_it_before_any_freeze(
    tmp_path: Path,
) -> None:
    """vm1's VMM passes the preflight, then a VMM without FREEZE takes vm1 over while the
    update prepares: the freeze refuses at once (vm-refused), it does not wait for a READY."""

    async def scenario() -> dict[str, Any]:
        luod = Luod(tmp_path)
        try:
            vmm = await handover(luod, "vm1")
            held = FakeConnection()  # a luod-dialect delegation VMM holds the prepare barrier
            await luod.ask(held, LUOD_DIALECT)
            await luod.ask(held, {"cmd": "SUBSCRIBE", "id": "vm2"})
            op = FakeConnection()
            update = {"cmd": "UPDATE", "kernel": kernel(tmp_path), "wait": True}
            waiting = asyncio.create_task(luod.ask(op, update))
            await until(lambda: held.events("START_PRESERVATION"))
            raw = FakeConnection()
            assert (await luod.ask(raw, {"cmd": "REGISTER", "id": "vm1"}))["ok"]
            await luod.ask(held, {"cmd": "READY", "id": "vm2"})
            reply = await asyncio.wait_for(waiting, 5)
            assert not vmm.events("FREEZE") and not raw.events("FREEZE")
            return dict(reply["update"])
        finally:
            luod.close()

    record = asyncio.run(scenario())
    assert record["outcome"] == "aborted"
    assert record["reason"].startswith("vm-refused: VM vm1 cannot answer FREEZE")


def test_luods_own_delegation_client_keeps_custody_until_done(tmp_path: Path) -> None:
    async def scenario() -> None:
        luod = Luod(tmp_path)
        conn = FakeConnection()
        await luod.ask(conn, LUOD_DIALECT)
        await luod.ask(conn, {"cmd": "SUBSCRIBE", "id": "vm2"})
        waiting = asyncio.create_task(luod.ask(conn, {"cmd": "KEXEC", "kernel": kernel(tmp_path)}))
        await until(lambda: conn.events("START_PRESERVATION"))
        await luod.ask(conn, {"cmd": "READY"})
        await until(lambda: conn.events("FREEZE"))  # the luod dialect is asked to pause
        await luod.ask(conn, {"cmd": "READY"})
        await asyncio.wait_for(waiting, 5)
        luod.close()

        luod = Luod(tmp_path)
        luod.handler.driver.resume_after_kexec(SystemClock().now())
        conn = FakeConnection()
        await luod.ask(conn, LUOD_DIALECT)
        assert (await luod.ask(conn, {"cmd": "CLAIM", "id": "vm2"}))["ok"]
        assert "vm2" in luod.registry.vms  # kept: a crashed VMM could CLAIM again
        assert (await luod.ask(conn, {"cmd": "CLAIM", "id": "vm2"}))["ok"]
        assert (await luod.ask(conn, {"cmd": "DONE", "id": "vm2"}))["ok"]
        assert "vm2" not in luod.registry.vms
        luod.close()

    asyncio.run(scenario())
