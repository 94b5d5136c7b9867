"""The event stream's ids, ``retry:``, resuming with Last-Event-ID, and its end when luod stops
(issue 16 §4): served by uvicorn on a unix socket, read with luoctl's SSE parser."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from luod.cli.sse import Event, EventParser
from luod.rest.app import create_app
from luod.rest.events import EventHub
from tests.rest.harness import Luod, until
from tests.rest.test_serve import serving, unix_client

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def read(client: httpx.AsyncClient, count: int, last_id: str | None = None) -> list[Event]:
    """The first ``count`` events of a stream (from after ``last_id``)."""
    parser, seen = EventParser(), []
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with client.stream("GET", "/v1/events", headers=headers) as reply:
        async for line in reply.aiter_lines():
            if (event := parser.feed(line)) is not None:
                seen.append(event)
            if len(seen) == count:
                break
    assert parser.retry_ms == 2000
    return seen


async def test_events_have_ids_and_a_reconnect_resumes_after_the_last_one(
    luod: Luod, tmp_path: Path
) -> None:
    sock = tmp_path / "api.sock"
    vmm = await luod.handover_vm("vm1")
    app = create_app(luod.facade, keepalive=0.05)
    async with serving(app, unix_path=sock), unix_client(sock) as client:
        body = {"kernel": str(luod.kernel), "reuse_cmdline": True}
        first = await read(client, 1)
        assert first[0].name == "STATE" and first[0].id
        assert (await client.post("/v1/update", json=body)).status_code == 202
        await until(lambda: vmm.events("FREEZE"))
        await luod.ask(vmm, {"cmd": "READY", "id": "vm1", "error": "cannot pause"})
        await until(lambda: luod.driver.machine.phase == "idle")
        missed = await read(client, 6, last_id=first[0].id)
        again = await read(client, 1, last_id="0-0")  # not this luod's: STATE again
    names = [e.name for e in missed]
    assert names[:3] == ["PHASE", "PHASE", "PHASE"] and "STATE" not in names
    assert names[-1] == "UPDATE_END" and [e.data["to"] for e in missed if e.name == "PHASE"] == [
        "preparing", "prepared", "freezing", "aborting", "idle",
    ]  # fmt: skip
    ids = [int(e.id.split("-")[1]) for e in missed if e.id]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert again[0].name == "STATE" and again[0].data["phase"] == "idle"


def test_a_last_id_older_than_what_the_hub_holds_is_not_a_resume() -> None:
    async def run() -> None:
        hub = EventHub(limit=3)
        start = hub.last_id
        for n in range(5):
            hub.publish({"event": "PHASE", "n": n})
        _, resumed = hub.subscribe(last_id=start)
        assert not resumed  # events 1 and 2 are gone: the client must start over
        stream, resumed = hub.subscribe(last_id=f"{hub.epoch}-3")
        assert resumed and [(await anext(stream))[1]["n"] for _ in range(2)] == [3, 4]

    asyncio.run(run())


async def test_shutdown_is_the_last_event_and_the_stream_ends_at_once(
    luod: Luod, tmp_path: Path
) -> None:
    sock = tmp_path / "api.sock"
    loop = asyncio.get_running_loop()
    with capture_logs() as logs:
        app = create_app(luod.facade, keepalive=0.05)
        async with serving(app, unix_path=sock), unix_client(sock) as client:
            parser, seen = EventParser(), []

            async def follow() -> None:
                async with client.stream("GET", "/v1/events") as reply:
                    async for line in reply.aiter_lines():
                        if (event := parser.feed(line)) is not None:
                            seen.append(event)

            following = asyncio.create_task(follow())
            await until(lambda: seen)
            stopping = loop.time()
            luod.daemon.events.stopping()  # what Daemon.main_loop does when luod stops
            await asyncio.wait_for(following, 2)
            ended = loop.time() - stopping
    assert [e.name for e in seen] == ["STATE", "SHUTDOWN"]
    assert ended < 0.5, f"the stream took {ended:.2f} s to end"
    assert not [entry for entry in logs if entry.get("exc_info") or entry["log_level"] == "error"]
