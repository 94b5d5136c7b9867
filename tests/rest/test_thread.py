"""The REST server as luod runs it: uvicorn in a thread and event loop of its own
(luod.rest.thread), reading snapshots and marshalling mutations through luod.rest.bridge."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from luod.errors import LuodError
from luod.rest import bridge as bridge_module
from luod.rest.app import create_app
from luod.rest.bridge import MAX_AGE, LoopBridge
from luod.rest.serve import serve_rest
from luod.rest.thread import serve_in_thread
from tests.rest.harness import Luod, until
from tests.rest.test_serve import Watcher, unix_client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@dataclass
class Threaded:
    bridge: LoopBridge
    sock: Path
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def threaded(luod: Luod, tmp_path: Path) -> AsyncIterator[Threaded]:
    """Served as the daemon serves it (luod.rest.serving.serve_api), minus the lazy import."""
    over = LoopBridge(luod.facade, asyncio.get_running_loop())
    luod.daemon.events.listen(over.changed)
    sock = tmp_path / "api.sock"
    app = create_app(over, keepalive=0.05)
    task = asyncio.create_task(serve_in_thread(lambda: serve_rest(app, unix_path=sock, group=None)))
    await until(lambda: sock.exists() or task.done())
    try:
        yield Threaded(over, sock, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def served(luod: Luod, tmp_path: Path) -> AsyncIterator[tuple[Threaded, httpx.AsyncClient]]:
    async with threaded(luod, tmp_path) as where, unix_client(where.sock) as client:
        yield where, client


def get_status_in_a_thread(sock: Path, answered: list[float]) -> threading.Thread:
    """GET /v1/status from a plain thread (the test's loop is about to be blocked)."""

    def get() -> None:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(sock))
            conn.sendall(b"GET /v1/status HTTP/1.1\r\nHost: luod\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200") and b'"phase":"idle"' in reply
        answered.append(time.monotonic())

    thread = threading.Thread(target=get)
    thread.start()
    return thread


async def test_status_answers_while_the_main_loop_is_blocked(
    luod: Luod, served: tuple[Threaded, httpx.AsyncClient]
) -> None:
    """The REST thread needs the GIL, not the main loop: a blocked loop delays no read (a
    fresh snapshot) or one by at most WAIT_LIMIT (a stale one: it is served all the same)."""
    _, client = served
    for stale in (False, True):
        assert (await client.get("/v1/status")).status_code == 200
        if stale:
            await asyncio.sleep(MAX_AGE * 1.5)
        answered: list[float] = []
        reader = get_status_in_a_thread(served[0].sock, answered)
        time.sleep(bridge_module.WAIT_LIMIT + 1.0)  # blocks this loop: luod's main loop
        unblocked = time.monotonic()
        await asyncio.to_thread(reader.join)
        assert answered and answered[0] < unblocked, f"stale={stale}"


async def test_every_facade_call_runs_on_the_main_loop(
    luod: Luod, served: tuple[Threaded, httpx.AsyncClient]
) -> None:
    calls: list[tuple[str, str]] = []
    for name in ("vm", "preflight", "start_update"):
        spy(luod.facade, name, calls)
    read = luod.facade.read

    def read_spied(name: str) -> Any:
        calls.append((name, threading.current_thread().name))
        return read(name)

    luod.facade.read = read_spied  # type: ignore[method-assign]
    await luod.handover_vm("vm1")
    _, client = served
    body = {"kernel": str(luod.kernel), "reuse_cmdline": True}
    assert (await client.post("/v1/preflight", json=body)).status_code == 200
    for path in ("/v1/status", "/v1/vms", "/v1/vms/vm1", "/v1/update", "/v1/history"):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.post("/v1/update", json=body)).status_code == 202
    assert {name for name, _ in calls} >= {"status", "vms", "update", "start_update"}
    assert {thread for _, thread in calls} == {threading.main_thread().name}


async def test_the_history_is_read_off_the_main_loop_one_page_at_a_time(
    luod: Luod, served: tuple[Threaded, httpx.AsyncClient]
) -> None:
    """The history and the metrics read the history file in a worker thread: luod's main loop
    never parses it (1000 records of long requests took ~0.1 s of it, and 11 MiB kept)."""
    calls: list[tuple[str, str]] = []
    for name in ("history_page", "ended"):
        method = getattr(luod.facade, name)

        def recorded(*args: Any, _name: str = name, _method: Any = method) -> Any:
            calls.append((_name, threading.current_thread().name))
            return _method(*args)

        setattr(luod.facade, name, recorded)
    _, client = served
    assert (await client.get("/v1/history?kind=all&limit=2")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200
    assert {name for name, _ in calls} == {"history_page", "ended"}
    assert threading.main_thread().name not in {thread for _, thread in calls}


def spy(facade: Any, name: str, calls: list[tuple[str, str]]) -> None:
    method: Callable[..., Awaitable[Any]] = getattr(facade, name)

    async def recorded(*args: Any) -> Any:
        calls.append((name, threading.current_thread().name))
        return await method(*args)

    setattr(facade, name, recorded)


async def test_the_rest_thread_stands_aside_while_vms_freeze(
    served: tuple[Threaded, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    where, client = served
    monkeypatch.setattr(bridge_module, "FREEZE_STANDOFF", 30.0)
    assert (await client.get("/v1/status")).status_code == 200
    where.bridge.changed({"event": "PHASE", "from": "prepared", "to": "freezing"})
    answered: list[float] = []
    reader = get_status_in_a_thread(where.sock, answered)
    await asyncio.sleep(0.3)
    assert not answered
    where.bridge.changed({"event": "PHASE", "from": "freezing", "to": "frozen"})
    await asyncio.to_thread(reader.join, 10)
    assert answered


async def test_a_change_over_the_vmm_socket_shows_within_max_age(
    luod: Luod, served: tuple[Threaded, httpx.AsyncClient]
) -> None:
    _, client = served
    assert (await client.get("/v1/status")).json()["vms"] == 0
    await luod.handover_vm("vm1")  # no event: only the snapshot's age tells it is old
    await asyncio.sleep(MAX_AGE)
    assert (await client.get("/v1/status")).json()["vms"] == 1
    assert (await client.get("/v1/vms/vm1")).json()["id"] == "vm1"


async def test_a_vm_the_snapshot_does_not_know_is_asked_of_the_registry(
    luod: Luod, served: tuple[Threaded, httpx.AsyncClient]
) -> None:
    _, client = served
    assert (await client.get("/v1/vms")).json()["vms"] == []
    await luod.handover_vm("vm1")
    assert (await client.get("/v1/vms/vm1")).json()["id"] == "vm1"  # at once, not in MAX_AGE
    missing = await client.get("/v1/vms/vm9")
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown-vm")


async def test_what_a_rest_client_did_shows_in_its_next_read(
    luod: Luod, served: tuple[Threaded, httpx.AsyncClient]
) -> None:
    await luod.handover_vm("vm1")
    _, client = served
    assert (await client.get("/v1/update")).json()["phase"] == "idle"
    body = {"kernel": str(luod.kernel), "reuse_cmdline": True}
    assert (await client.post("/v1/update", json=body)).status_code == 202
    assert (await client.get("/v1/update")).json()["phase"] != "idle"
    assert (await client.get("/v1/status")).json()["phase"] != "idle"


async def test_a_snapshot_is_a_copy_later_changes_do_not_touch(
    luod: Luod, served: tuple[Threaded, httpx.AsyncClient]
) -> None:
    where, client = served
    await luod.handover_vm("vm1")
    await client.get("/v1/vms")  # taken on the main loop, kept by the REST thread
    before = where.bridge.snapshot("vms")
    assert before is not None
    dump = before.value.model_dump()
    luod.registry.vms["vm1"].files["ram0"].reclaimed = True
    luod.registry.vms["vm1"].note = "changed"
    assert before.value.model_dump() == dump


async def test_sse_through_the_thread_follows_an_update_in_order(
    luod: Luod, served: tuple[Threaded, httpx.AsyncClient]
) -> None:
    _, client = served
    vmm = await luod.handover_vm("vm1")
    watcher = Watcher(client)
    await until(lambda: watcher.seen)
    name, state, _ = watcher.seen[0]
    assert (name, state["phase"], state["update"]) == ("STATE", "idle", None)
    body = {"kernel": str(luod.kernel), "reuse_cmdline": True}
    assert (await client.post("/v1/update", json=body)).status_code == 202
    await until(lambda: vmm.events("FREEZE"))
    await luod.ask(vmm, {"cmd": "READY", "id": "vm1"})
    await until(lambda: "rebooting" in watcher.phases())
    await watcher.stop()
    assert watcher.phases() == ["preparing", "prepared", "freezing", "frozen", "rebooting"]
    await until(lambda: len(luod.facade.hub) == 0)


async def test_cancelling_stops_the_thread_and_open_streams(luod: Luod, tmp_path: Path) -> None:
    async with threaded(luod, tmp_path) as where, unix_client(where.sock) as client:
        watcher = Watcher(client)
        await until(lambda: watcher.seen)
        assert [t for t in threading.enumerate() if t.name == "luod-rest"]
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3
    assert where.task.done() and not where.sock.exists()
    assert not [t for t in threading.enumerate() if t.name == "luod-rest"]
    await until(lambda: watcher.task.done())
    assert watcher.cut and len(luod.facade.hub) == 0


async def test_what_the_server_refuses_is_raised_on_the_main_loop() -> None:
    async def refused() -> None:
        await serve_rest(object(), unix_path=None, tcp=("127.0.0.1", 0))  # type: ignore[arg-type]

    with pytest.raises(LuodError) as error:
        await serve_in_thread(refused)
    assert error.value.code == "rest-tcp-needs-token"
    assert not [t for t in threading.enumerate() if t.name == "luod-rest"]
