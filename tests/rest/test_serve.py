"""serve_rest for real: uvicorn in this event loop on a unix socket and on TCP (bearer token,
TLS), and the SSE stream of a whole update in phase order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter
from structlog.testing import capture_logs

from luod.cli.sse import Event, EventParser
from luod.errors import LuodError
from luod.rest import models
from luod.rest.app import create_app
from luod.rest.auth import PEER_UID_KEY
from luod.rest.serve import Endpoints, serve_rest
from tests.certs import self_signed
from tests.rest.harness import Luod, until

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
TOKEN = "s3cret-token-0123456789"
EVENT: TypeAdapter[Any] = TypeAdapter(models.Event)


@contextlib.asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[Endpoints]:
    """serve_rest in a task; its endpoints once they listen; cancelled (and awaited) after."""
    found: list[Endpoints] = []
    task = asyncio.create_task(serve_rest(app, group=None, ready=found.append, **options))
    await until(lambda: found or task.done())
    if task.done():
        task.result()  # raises what serve_rest refused
    try:
        yield found[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def unix_client(path: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(path)), base_url="http://luod"
    )


def token_file(tmp_path: Path, mode: int = 0o600, token: str = TOKEN) -> Path:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


async def test_unix_socket_is_0660_needs_no_token_and_goes_away(luod: Luod, tmp_path: Path) -> None:
    sock = tmp_path / "run" / "api.sock"
    async with serving(create_app(luod.facade), unix_path=sock):
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660 and stat.S_ISSOCK(sock.stat().st_mode)
        async with unix_client(sock) as client:
            assert (await client.get("/v1/status")).json()["phase"] == "idle"
    assert not sock.exists()


async def test_an_activated_unix_socket_is_served_said_by_its_path_and_left_in_place(
    luod: Luod, tmp_path: Path
) -> None:
    """luod-api.socket's listener (systemd binds it; here the test does): luod serves on it,
    says where in ``rest-serving`` (not "None"), and leaves the path to systemd."""
    path = tmp_path / "api.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    app = create_app(luod.facade)
    with capture_logs() as logs:
        async with serving(app, unix_path=None, unix_sock=listener), unix_client(path) as client:
            assert (await client.get("/v1/status")).json()["phase"] == "idle"
    [said] = [e for e in logs if e["event"] == "rest-serving"]
    assert said["unix"] == str(path) and said["activated"] is True, said
    assert path.exists()


async def test_a_bound_unix_socket_is_said_not_activated(luod: Luod, tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    with capture_logs() as logs:
        async with serving(create_app(luod.facade), unix_path=sock):
            pass
    [said] = [e for e in logs if e["event"] == "rest-serving"]
    assert said["unix"] == str(sock) and said["activated"] is False, said


async def test_tcp_without_a_token_file_is_refused(luod: Luod) -> None:
    with pytest.raises(LuodError) as refused:
        await serve_rest(create_app(luod.facade), unix_path=None, tcp=("127.0.0.1", 0))
    assert refused.value.code == "rest-tcp-needs-token"


async def test_a_token_file_every_user_may_read_is_refused(luod: Luod, tmp_path: Path) -> None:
    with pytest.raises(LuodError) as refused:
        await serve_rest(
            create_app(luod.facade),
            unix_path=None,
            tcp=("127.0.0.1", 0),
            token_file=token_file(tmp_path, 0o644),
        )
    assert refused.value.code == "rest-token-unsafe"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", "Bearer"]
)
async def test_tcp_without_the_right_bearer_token_is_401(
    luod: Luod, tmp_path: Path, authorization: str | None
) -> None:
    tcp = {"tcp": ("127.0.0.1", 0), "token_file": token_file(tmp_path)}
    async with serving(create_app(luod.facade), unix_path=None, **tcp) as where:
        assert where.tcp is not None
        headers = {"Authorization": authorization} if authorization else {}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{where.tcp[1]}") as client:
            reply = await client.get("/v1/status", headers=headers)
            metrics = await client.get("/metrics", headers=headers)
    assert reply.status_code == 401 and metrics.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["code"] == "unauthorized"


@pytest.mark.parametrize("public", [False, True])
async def test_public_metrics_serve_metrics_and_health_without_the_token_and_nothing_else(
    luod: Luod, tmp_path: Path, public: bool
) -> None:
    tcp = {"tcp": ("127.0.0.1", 0), "token_file": token_file(tmp_path)}
    app = create_app(luod.facade)
    async with serving(app, unix_path=None, public_metrics=public, **tcp) as where:
        assert where.tcp is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{where.tcp[1]}") as client:
            codes = {p: (await client.get(p)).status_code for p in ("/metrics", "/v1/health")}
            guarded = {p: (await client.get(p)).status_code for p in ("/v1/status", "/v1/vms")}
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope-0123456"})
    open_code = 200 if public else 401
    assert codes == {"/metrics": open_code, "/v1/health": open_code}
    assert guarded == {"/v1/status": 401, "/v1/vms": 401}
    assert wrong.status_code == open_code  # public: the token is not even looked at


async def test_tcp_with_the_token_serves_beside_the_unix_socket(luod: Luod, tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    tcp = {"tcp": ("127.0.0.1", 0), "token_file": token_file(tmp_path)}
    async with serving(create_app(luod.facade), unix_path=sock, **tcp) as where:
        assert where.tcp is not None
        url = f"http://127.0.0.1:{where.tcp[1]}"
        async with httpx.AsyncClient(base_url=url) as client:
            reply = await client.get("/v1/health", headers={"Authorization": f"Bearer {TOKEN}"})
        async with unix_client(sock) as local:
            assert (await local.get("/v1/health")).status_code == 200
    assert reply.status_code == 200


async def test_tls_when_a_certificate_and_key_are_configured(luod: Luod, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    options = {"token_file": token_file(tmp_path), "tls_cert": cert, "tls_key": key}
    async with serving(
        create_app(luod.facade), unix_path=None, tcp=("127.0.0.1", 0), **options
    ) as where:
        assert where.tls and where.tcp is not None
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{where.tcp[1]}", verify=trust
        ) as client:
            reply = await client.get("/v1/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200


async def test_tls_needs_both_files(luod: Luod, tmp_path: Path) -> None:
    with pytest.raises(LuodError) as refused:
        await serve_rest(create_app(luod.facade), unix_path=None, tls_cert=tmp_path / "c")
    assert refused.value.code == "rest-tls-incomplete"


# --- Server-Sent Events ------------------------------------------------------------------------
class Watcher:
    """Follows /v1/events in a task, keeping each (event, data, id)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.seen: list[Event] = []
        self.cut = False  # the server went away mid-stream
        self.task = asyncio.create_task(self._follow(client))

    async def _follow(self, client: httpx.AsyncClient) -> None:
        parser = EventParser()
        async with client.stream("GET", "/v1/events") as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            try:
                async for line in reply.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        self.seen.append(event)
            except httpx.TransportError:
                self.cut = True

    def names(self) -> list[str]:
        return [name for name, _, _ in self.seen]

    def phases(self) -> list[str]:
        return [data["to"] for name, data, _ in self.seen if name == "PHASE"]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def served(luod: Luod, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    sock = tmp_path / "api.sock"
    app = create_app(luod.facade, keepalive=0.05)
    async with serving(app, unix_path=sock), unix_client(sock) as client:
        yield client


async def test_sse_follows_a_whole_update_in_phase_order(
    luod: Luod, served: httpx.AsyncClient
) -> None:
    vmm = await luod.handover_vm("vm1")
    watcher = Watcher(served)
    await until(lambda: watcher.seen)
    name, state, _ = watcher.seen[0]
    assert (name, state["phase"], state["update"]) == ("STATE", "idle", None)
    body = {"kernel": str(luod.kernel), "reuse_cmdline": True}
    assert (await served.post("/v1/update", json=body)).status_code == 202
    await until(lambda: vmm.events("FREEZE"))
    await luod.ask(vmm, {"cmd": "READY", "id": "vm1"})
    await until(lambda: "rebooting" in watcher.phases() and luod.kexeced)
    await watcher.stop()
    assert watcher.phases() == ["preparing", "prepared", "freezing", "frozen", "rebooting"]
    for name, data, _ in watcher.seen:  # each as the OpenAPI document describes it
        assert EVENT.validate_python(data).event == name
    progress = [data for name, data, _ in watcher.seen if name == "VM_PROGRESS"]
    assert [(p["id"], p["step"]) for p in progress] == [("vm1", "freeze_ack")]
    assert watcher.names().index("VM_PROGRESS") < watcher.names().index("PHASE", 4)


async def test_sse_ends_an_aborted_update_with_update_end(
    luod: Luod, served: httpx.AsyncClient
) -> None:
    vmm = await luod.handover_vm("vm1")
    watcher = Watcher(served)
    await until(lambda: watcher.seen)
    body = {"kernel": str(luod.kernel), "reuse_cmdline": True}
    update_id = (await served.post("/v1/update", json=body)).json()["id"]
    await until(lambda: vmm.events("FREEZE"))
    await luod.ask(vmm, {"cmd": "READY", "id": "vm1", "error": "cannot pause"})
    await until(lambda: "UPDATE_END" in watcher.names())
    await watcher.stop()
    assert watcher.phases() == ["preparing", "prepared", "freezing", "aborting", "idle"]
    name, end, _ = watcher.seen[-1]
    assert (name, end["id"], end["outcome"]) == ("UPDATE_END", update_id, "aborted")
    assert end["reason"].startswith("vm-refused")


async def test_sse_keeps_the_connection_alive_and_unsubscribes_on_close(
    luod: Luod, served: httpx.AsyncClient
) -> None:
    async with served.stream("GET", "/v1/events") as reply:
        lines = reply.aiter_lines()
        seen = [await anext(lines) for _ in range(7)]
        assert len(luod.facade.hub) == 1
    assert ": keepalive" in seen
    await until(lambda: len(luod.facade.hub) == 0)


async def test_stopping_the_server_ends_open_streams_quickly(luod: Luod, tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    loop = asyncio.get_running_loop()
    async with serving(create_app(luod.facade), unix_path=sock), unix_client(sock) as client:
        watcher = Watcher(client)
        await until(lambda: watcher.seen)
        stopping = loop.time()
    assert loop.time() - stopping < 3
    await until(lambda: watcher.task.done())
    assert watcher.cut and not sock.exists()


async def test_the_unix_listener_tells_the_app_the_callers_uid(tmp_path: Path) -> None:
    """Mutations need root on the unix socket: the uid must come from SO_PEERCRED."""

    async def echo(scope: Any, receive: Any, send: Any) -> None:
        body = json.dumps({"uid": scope.get(PEER_UID_KEY)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    sock = tmp_path / "api.sock"
    async with serving(echo, unix_path=sock), unix_client(sock) as client:
        assert (await client.get("/")).json() == {"uid": os.getuid()}
